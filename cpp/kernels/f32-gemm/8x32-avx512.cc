// AVX-512 GEMM micro-kernels: 8 rows x 32 columns (two zmm vectors). Design: avx512-template.h.
#include <immintrin.h>

#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "avx512-template.h"
}  // namespace

extern const F32GemmUkernelFn f32_gemm_8x32__avx512[9] = {nullptr,
                                                          gemm_ukernel<1, 2>,
                                                          gemm_ukernel<2, 2>,
                                                          gemm_ukernel<3, 2>,
                                                          gemm_ukernel<4, 2>,
                                                          gemm_ukernel<5, 2>,
                                                          gemm_ukernel<6, 2>,
                                                          gemm_ukernel<7, 2>,
                                                          gemm_ukernel<8, 2>};

}  // namespace lrk
