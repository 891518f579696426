// Portable int8 GEMM micro-kernels: 4 rows x 4 columns, K in groups of 4 (the packed layout every
// int8 kernel shares). The fallback on every CPU; int32 products cannot overflow for K <= 65536
// (the layers refuse more).
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

constexpr std::size_t kNr = 4;

template <std::size_t Rows>
void gemm_ukernel(std::size_t nr, std::size_t kgroups, std::size_t taps,
                  const std::int8_t* const* a_taps, std::size_t lda, const std::int8_t* w,
                  std::int32_t* c, std::size_t ldc) {
  std::int32_t acc[Rows][kNr] = {};
  for (std::size_t tap = 0; tap < taps; ++tap) {
    const std::int8_t* a = a_taps[tap];
    for (std::size_t g = 0; g < kgroups; ++g, w += kNr * 4) {
      for (std::size_t i = 0; i < Rows; ++i) {
        const std::int8_t* ai = a + i * lda + 4 * g;
        for (std::size_t j = 0; j < kNr; ++j) {
          acc[i][j] +=
              ai[0] * w[j * 4] + ai[1] * w[j * 4 + 1] + ai[2] * w[j * 4 + 2] + ai[3] * w[j * 4 + 3];
        }
      }
    }
  }
  for (std::size_t i = 0; i < Rows; ++i) {
    for (std::size_t j = 0; j < nr; ++j) c[i * ldc + j] = acc[i][j];
  }
}

}  // namespace

extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_4x4c4__scalar[5] = {
    nullptr, gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>};

}  // namespace lrk
