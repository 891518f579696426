// int8 GEMM micro-kernels for aarch64 without dot products (Cortex-A53/A57/A72): 4 rows x 8
// columns, SMULL/SMLAL/SADALP. Design: neon-template.h.
#if defined(__aarch64__)
#include <arm_neon.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "neon-template.h"
}  // namespace

extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_4x8c4__aarch64_neon[5] = {
    nullptr, gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>};

}  // namespace lrk
#endif  // __aarch64__
