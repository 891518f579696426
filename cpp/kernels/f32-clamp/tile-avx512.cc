// Output clamp of a tile with AVX-512F, 16 floats per step, the tail under an opmask. VMAXPS and
// VMINPS return their second operand when either is NaN, so the input goes second: NaN in, NaN
// out, and max(lo, x) = (lo > x ? lo : x) exactly as the scalar kernel.
#include <immintrin.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

// _mm512_max_ps/_mm512_min_ps start from _mm512_undefined_ps, which GCC 12 reports as
// maybe-uninitialized; the zero-masking forms with a full mask are the same instructions.
inline __m512 clamp16(__m512 v, __m512 vlo, __m512 vhi) {
  const __mmask16 all = 0xFFFF;
  return _mm512_maskz_min_ps(all, vhi, _mm512_maskz_max_ps(all, vlo, v));
}

void clamp(std::size_t rows, std::size_t cols, const float* in, std::size_t ldi, float* out,
           std::size_t ldo, float lo, float hi) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const std::size_t tail = cols % 16;
  const __mmask16 mask = static_cast<__mmask16>((1u << tail) - 1u);
  for (std::size_t i = 0; i < rows; ++i) {
    const float* src = in + i * ldi;
    float* dst = out + i * ldo;
    std::size_t j = 0;
    for (; j + 16 <= cols; j += 16) {
      const __m512 v = clamp16(_mm512_loadu_ps(src + j), vlo, vhi);
      _mm512_storeu_ps(dst + j, v);
    }
    if (tail != 0) {
      const __m512 v = clamp16(_mm512_maskz_loadu_ps(mask, src + j), vlo, vhi);
      _mm512_mask_storeu_ps(dst + j, mask, v);
    }
  }
}

}  // namespace

extern const F32ClampFn f32_clamp_tile__avx512 = clamp;

}  // namespace lrk
