// int8 GEMM micro-kernels for armv7: 2 rows x 8 columns, VMULL/VMLAL/VPADAL. Design:
// neon-template.h.
#if defined(__arm__) && !defined(__aarch64__)
#include <arm_neon.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "neon-template.h"
}  // namespace

extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_2x8c4__aarch32_neon[3] = {nullptr, gemm_ukernel<1>,
                                                                          gemm_ukernel<2>};

}  // namespace lrk
#endif  // __arm__
