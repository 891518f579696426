// Output clamp of a tile with NEON (aarch64 and armv7), 4 floats per step. FMAX/FMIN would turn
// -0.0 into +0.0 under a bound of 0 (and may return the default NaN), so the kernel compares and
// selects instead: x < lo ? lo : x, then > hi ? hi : x, false for NaN. The same bits as the scalar
// and x86 kernels.
#include <arm_neon.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

void clamp(std::size_t rows, std::size_t cols, const float* in, std::size_t ldi, float* out,
           std::size_t ldo, float lo, float hi) {
  const float32x4_t vlo = vdupq_n_f32(lo), vhi = vdupq_n_f32(hi);
  for (std::size_t i = 0; i < rows; ++i) {
    const float* src = in + i * ldi;
    float* dst = out + i * ldo;
    std::size_t j = 0;
    for (; j + 4 <= cols; j += 4) {
      float32x4_t v = vld1q_f32(src + j);
      v = vbslq_f32(vcltq_f32(v, vlo), vlo, v);
      v = vbslq_f32(vcgtq_f32(v, vhi), vhi, v);
      vst1q_f32(dst + j, v);
    }
    for (; j < cols; ++j) {
      float v = src[j];
      v = v < lo ? lo : v;
      v = v > hi ? hi : v;
      dst[j] = v;
    }
  }
}

}  // namespace

extern const F32ClampFn f32_clamp_tile__neon = clamp;

}  // namespace lrk
