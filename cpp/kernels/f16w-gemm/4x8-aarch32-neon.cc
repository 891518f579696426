// f16w GEMM micro-kernels for armv7: 4 rows x 8 columns, VMLA by lane on fp16 weights widened
// with VCVT.F32.F16 (-mfp16-format=ieee, VFPv4's half-precision extension). Design:
// neon-template.h.
#if defined(__arm__) && !defined(__aarch64__)
#include <arm_neon.h>

#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "neon-template.h"
}  // namespace

extern const F32GemmUkernelFn f16w_gemm_4x8__aarch32_neon[5] = {
    nullptr, gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>};

}  // namespace lrk
#endif  // __arm__
