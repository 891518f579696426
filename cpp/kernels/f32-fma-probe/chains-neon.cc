// NEON FMA peak probe (16 q-register chains on aarch64, 8 on armv7).
#include <arm_neon.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

#if defined(__aarch64__)
constexpr int kProbeChains = 16;
#else
constexpr int kProbeChains = 8;
#endif

// Independent FMA chains: enough to fill the FMA pipes for their latency on every target core.
void fma_probe(std::size_t iterations, float* sink) {
  float32x4_t acc[kProbeChains];
  const float32x4_t x = vdupq_n_f32(0.999f), y = vdupq_n_f32(1e-7f);
#pragma GCC unroll 16
  for (int i = 0; i < kProbeChains; ++i) acc[i] = vdupq_n_f32(static_cast<float>(i));
  for (std::size_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kProbeChains; ++i) {
#if defined(__aarch64__)
      acc[i] = vfmaq_f32(y, acc[i], x);
#else
      acc[i] = vmlaq_f32(y, acc[i], x);
#endif
    }
  }
  float32x4_t sum = acc[0];
#pragma GCC unroll 16
  for (int i = 1; i < kProbeChains; ++i) sum = vaddq_f32(sum, acc[i]);
  vst1q_f32(sink, sum);
}

}  // namespace

extern const FmaProbeFn f32_fma_probe__neon = fma_probe;
extern const std::size_t f32_fma_probe_flops__neon = kProbeChains * 4 * 2;

}  // namespace lrk
