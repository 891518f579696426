// f16w GEMM micro-kernels for aarch64: 8 rows x 8 columns, FMLA by lane on fp16 weights widened
// with FCVTL/FCVTL2. Design: neon-template.h.
#if defined(__aarch64__)
#include <arm_neon.h>

#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "neon-template.h"
}  // namespace

extern const F32GemmUkernelFn f16w_gemm_8x8__aarch64_neon[9] = {
    nullptr,         gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>,
    gemm_ukernel<5>, gemm_ukernel<6>, gemm_ukernel<7>, gemm_ukernel<8>};

}  // namespace lrk
#endif  // __aarch64__
