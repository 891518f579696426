// Portable NCHW <-> NHWC row transpose in 8 x 8 tiles.
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

// 8 x 8 tiles so both sides are touched a cache line at a time.
void transpose(const float* src, std::size_t rows, std::size_t cols, std::size_t lds, float* dst,
               std::size_t ldd) {
  for (std::size_t i0 = 0; i0 < rows; i0 += 8) {
    const std::size_t in = rows - i0 < 8 ? rows - i0 : 8;
    for (std::size_t j0 = 0; j0 < cols; j0 += 8) {
      const std::size_t jn = cols - j0 < 8 ? cols - j0 : 8;
      for (std::size_t i = 0; i < in; ++i)
        for (std::size_t j = 0; j < jn; ++j)
          dst[(j0 + j) * ldd + i0 + i] = src[(i0 + i) * lds + j0 + j];
    }
  }
}

}  // namespace

extern const F32TransposeFn f32_transpose_8x8__scalar = transpose;

}  // namespace lrk
