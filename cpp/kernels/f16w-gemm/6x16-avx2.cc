// AVX2+FMA+F16C f16w GEMM micro-kernels: 6 rows x 16 columns, f32 arithmetic on fp16 weights
// widened by VCVTPH2PS as they are loaded: the f32 kernel's template (../f32-gemm/avx2-template.h)
// with W = fp16.
#include <immintrin.h>

#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "../f32-gemm/avx2-template.h"
}  // namespace

extern const F32GemmUkernelFn f16w_gemm_6x16__avx2[7] = {nullptr,
                                                         gemm_ukernel<1, std::uint16_t>,
                                                         gemm_ukernel<2, std::uint16_t>,
                                                         gemm_ukernel<3, std::uint16_t>,
                                                         gemm_ukernel<4, std::uint16_t>,
                                                         gemm_ukernel<5, std::uint16_t>,
                                                         gemm_ukernel<6, std::uint16_t>};

}  // namespace lrk
