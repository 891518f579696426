// AVX-512 f16w GEMM micro-kernels: 8 rows x 32 columns (two zmm vectors), f32 arithmetic on fp16
// weights widened by VCVTPH2PS as they are loaded. The design is the f32 kernel's
// (../f32-gemm/avx512-template.h, W = fp16): 2 conversions per 16 FMAs leave the FMA ports the
// bound at 8 rows, and a k step's weights are one 64-byte line (half the f32 bytes) at batch 1.
#include <immintrin.h>

#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "../f32-gemm/avx512-template.h"
}  // namespace

extern const F32GemmUkernelFn f16w_gemm_8x32__avx512[9] = {nullptr,
                                                           gemm_ukernel<1, 2, std::uint16_t>,
                                                           gemm_ukernel<2, 2, std::uint16_t>,
                                                           gemm_ukernel<3, 2, std::uint16_t>,
                                                           gemm_ukernel<4, 2, std::uint16_t>,
                                                           gemm_ukernel<5, 2, std::uint16_t>,
                                                           gemm_ukernel<6, 2, std::uint16_t>,
                                                           gemm_ukernel<7, 2, std::uint16_t>,
                                                           gemm_ukernel<8, 2, std::uint16_t>};

}  // namespace lrk
