// AVX-512 FMA peak probe.
#include <immintrin.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

// 16 independent zmm FMA chains: enough to fill 2 FMA ports x 4 cycles of latency (and more).
void fma_probe(std::size_t iterations, float* sink) {
  __m512 acc[16];
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-7f);
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (std::size_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  }
  __m512 sum = acc[0];
#pragma GCC unroll 16
  for (int i = 1; i < 16; ++i) sum = _mm512_add_ps(sum, acc[i]);
  _mm512_storeu_ps(sink, sum);
}

}  // namespace

extern const FmaProbeFn f32_fma_probe__avx512 = fma_probe;
extern const std::size_t f32_fma_probe_flops__avx512 = 16 * 16 * 2;

}  // namespace lrk
