// NEON NCHW <-> NHWC row transpose in 4 x 4 tiles.
#include <arm_neon.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

// 4 x 4 tiles through q registers, scalar edges.
void transpose(const float* src, std::size_t rows, std::size_t cols, std::size_t lds, float* dst,
               std::size_t ldd) {
  std::size_t i0 = 0;
  for (; i0 + 4 <= rows; i0 += 4) {
    std::size_t j0 = 0;
    for (; j0 + 4 <= cols; j0 += 4) {
      const float* s = src + i0 * lds + j0;
      const float32x4x2_t p01 = vtrnq_f32(vld1q_f32(s), vld1q_f32(s + lds));
      const float32x4x2_t p23 = vtrnq_f32(vld1q_f32(s + 2 * lds), vld1q_f32(s + 3 * lds));
      float* d = dst + j0 * ldd + i0;
      vst1q_f32(d, vcombine_f32(vget_low_f32(p01.val[0]), vget_low_f32(p23.val[0])));
      vst1q_f32(d + ldd, vcombine_f32(vget_low_f32(p01.val[1]), vget_low_f32(p23.val[1])));
      vst1q_f32(d + 2 * ldd, vcombine_f32(vget_high_f32(p01.val[0]), vget_high_f32(p23.val[0])));
      vst1q_f32(d + 3 * ldd, vcombine_f32(vget_high_f32(p01.val[1]), vget_high_f32(p23.val[1])));
    }
    for (std::size_t i = i0; i < i0 + 4; ++i)
      for (std::size_t j = j0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
  }
  for (std::size_t i = i0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

}  // namespace

extern const F32TransposeFn f32_transpose_4x4__neon = transpose;

}  // namespace lrk
