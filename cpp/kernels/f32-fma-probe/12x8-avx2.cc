// AVX2 FMA peak probe.
#include <immintrin.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

// 12 independent ymm FMA chains: enough to fill 2 FMA ports x 5 cycles of latency (Haswell).
void fma_probe(std::size_t iterations, float* sink) {
  __m256 acc[12];
  const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-7f);
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  for (std::size_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
  }
  __m256 sum = acc[0];
#pragma GCC unroll 12
  for (int i = 1; i < 12; ++i) sum = _mm256_add_ps(sum, acc[i]);
  _mm256_storeu_ps(sink, sum);
}

}  // namespace

extern const FmaProbeFn f32_fma_probe__avx2 = fma_probe;
extern const std::size_t f32_fma_probe_flops__avx2 = 12 * 8 * 2;

}  // namespace lrk
