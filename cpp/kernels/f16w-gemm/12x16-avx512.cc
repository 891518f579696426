// AVX-512 f16w GEMM micro-kernels: 12 rows x 16 columns (one zmm), for operands of at most 16
// output columns (as the f32 12x16 kernel). Design: ../f32-gemm/avx512-template.h with fp16
// weights (1 conversion per 12 FMAs).
#include <immintrin.h>

#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "../f32-gemm/avx512-template.h"
}  // namespace

extern const F32GemmUkernelFn f16w_gemm_12x16__avx512[13] = {nullptr,
                                                             gemm_ukernel<1, 1, std::uint16_t>,
                                                             gemm_ukernel<2, 1, std::uint16_t>,
                                                             gemm_ukernel<3, 1, std::uint16_t>,
                                                             gemm_ukernel<4, 1, std::uint16_t>,
                                                             gemm_ukernel<5, 1, std::uint16_t>,
                                                             gemm_ukernel<6, 1, std::uint16_t>,
                                                             gemm_ukernel<7, 1, std::uint16_t>,
                                                             gemm_ukernel<8, 1, std::uint16_t>,
                                                             gemm_ukernel<9, 1, std::uint16_t>,
                                                             gemm_ukernel<10, 1, std::uint16_t>,
                                                             gemm_ukernel<11, 1, std::uint16_t>,
                                                             gemm_ukernel<12, 1, std::uint16_t>};

}  // namespace lrk
