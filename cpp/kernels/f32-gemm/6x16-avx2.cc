// AVX2+FMA GEMM micro-kernels: 6 rows x 16 columns (two ymm vectors). Design: avx2-template.h.
#include <immintrin.h>

#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "avx2-template.h"
}  // namespace

extern const F32GemmUkernelFn f32_gemm_6x16__avx2[7] = {
    nullptr,         gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>,
    gemm_ukernel<4>, gemm_ukernel<5>, gemm_ukernel<6>};

}  // namespace lrk
