// AVX-512 GEMM micro-kernels: 12 rows x 16 columns (one zmm), for operands of at most 16 output
// columns (the stages of a rank-16 factorization would waste half of each 32-wide panel).
#include <immintrin.h>

#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "avx512-template.h"
}  // namespace

extern const F32GemmUkernelFn f32_gemm_12x16__avx512[13] = {nullptr,
                                                            gemm_ukernel<1, 1>,
                                                            gemm_ukernel<2, 1>,
                                                            gemm_ukernel<3, 1>,
                                                            gemm_ukernel<4, 1>,
                                                            gemm_ukernel<5, 1>,
                                                            gemm_ukernel<6, 1>,
                                                            gemm_ukernel<7, 1>,
                                                            gemm_ukernel<8, 1>,
                                                            gemm_ukernel<9, 1>,
                                                            gemm_ukernel<10, 1>,
                                                            gemm_ukernel<11, 1>,
                                                            gemm_ukernel<12, 1>};

}  // namespace lrk
