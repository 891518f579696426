// Portable output clamp of a tile (the "minmax" epilogue): out = min(max(in, lo), hi) with NaN
// passed through, written as the comparisons the vector kernels make, so every ISA gives the same
// bits (-0.0 stays -0.0 under a lower bound of 0).
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

void clamp(std::size_t rows, std::size_t cols, const float* in, std::size_t ldi, float* out,
           std::size_t ldo, float lo, float hi) {
  for (std::size_t i = 0; i < rows; ++i) {
    const float* src = in + i * ldi;
    float* dst = out + i * ldo;
    for (std::size_t j = 0; j < cols; ++j) {
      float v = src[j];
      v = v < lo ? lo : v;  // false for NaN: NaN stays
      v = v > hi ? hi : v;
      dst[j] = v;
    }
  }
}

}  // namespace

extern const F32ClampFn f32_clamp_tile__scalar = clamp;

}  // namespace lrk
