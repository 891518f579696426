// Output clamp of a tile with AVX2, 8 floats per step, the tail through a masked load and store.
// MAXPS/MINPS return their second operand when either is NaN, so the input goes second: NaN in,
// NaN out, and max(lo, x) = (lo > x ? lo : x) exactly as the scalar kernel.
#include <immintrin.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

alignas(32) const int kTailMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

void clamp(std::size_t rows, std::size_t cols, const float* in, std::size_t ldi, float* out,
           std::size_t ldo, float lo, float hi) {
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  const std::size_t tail = cols % 8;
  const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - tail));
  for (std::size_t i = 0; i < rows; ++i) {
    const float* src = in + i * ldi;
    float* dst = out + i * ldo;
    std::size_t j = 0;
    for (; j + 8 <= cols; j += 8) {
      const __m256 v = _mm256_min_ps(vhi, _mm256_max_ps(vlo, _mm256_loadu_ps(src + j)));
      _mm256_storeu_ps(dst + j, v);
    }
    if (tail != 0) {
      const __m256 v = _mm256_min_ps(vhi, _mm256_max_ps(vlo, _mm256_maskload_ps(src + j, mask)));
      _mm256_maskstore_ps(dst + j, mask, v);
    }
  }
}

}  // namespace

extern const F32ClampFn f32_clamp_tile__avx2 = clamp;

}  // namespace lrk
