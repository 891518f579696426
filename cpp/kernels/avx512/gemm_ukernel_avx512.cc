// AVX-512 GEMM micro-kernels: 8 rows x 32 columns (two zmm vectors).
//
// Why 8x32: 16 accumulators + 2 weight vectors leave 14 of the 32 zmm registers free, and each
// k step issues 2 weight loads and 8 embedded broadcasts for 16 FMAs, so the two FMA ports (not the
// load ports) are the bottleneck. 16 independent accumulators cover the FMA latency (4 cycles x 2
// ports = 8 needed). A 32-wide panel also keeps the layer's output features in whole zmm vectors.
// Rows 1..3 split K over 2-4 accumulator sets to keep at least 8 FMA chains in flight (GEMV).
#include <immintrin.h>

#include "lrkernels/ukernel.h"

namespace lrk {
namespace avx512 {
namespace {

constexpr std::size_t kMr = 8;
constexpr std::size_t kNr = 32;
// Weight rows (128 bytes each) fetched ahead of use (8 KiB): without it, panels streamed from
// DRAM/L3 at batch 2..8 ran at half the bandwidth that batch 1 gets.
constexpr std::size_t kPrefetchRows = 64;

inline __mmask16 first_lanes(std::size_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

template <std::size_t Rows>
void gemm_ukernel(std::size_t nr, std::size_t kc, const float* a, std::size_t lda, const float* w,
                  const float* init, float* c, std::size_t ldc) {
  constexpr std::size_t Split = Rows >= 4 ? 1 : (Rows == 1 ? 4 : 2);
  const __mmask16 mask0 = first_lanes(nr);
  const __mmask16 mask1 = first_lanes(nr > 16 ? nr - 16 : 0);

  __m512 acc[Split][Rows][2];
  if (init != nullptr) {
    const __m512 b0 = _mm512_loadu_ps(init);
    const __m512 b1 = _mm512_loadu_ps(init + 16);
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[0][i][0] = b0;
      acc[0][i][1] = b1;
    }
  } else {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[0][i][0] = _mm512_maskz_loadu_ps(mask0, c + i * ldc);
      acc[0][i][1] = _mm512_maskz_loadu_ps(mask1, c + i * ldc + 16);
    }
  }
#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[s][i][0] = _mm512_setzero_ps();
      acc[s][i][1] = _mm512_setzero_ps();
    }
  }

  std::size_t k = 0;
  for (; k + Split <= kc; k += Split) {
#pragma GCC unroll 4
    for (std::size_t s = 0; s < Split; ++s) {
      const float* wk = w + (k + s) * kNr;
      _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchRows * kNr), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchRows * kNr + 16), _MM_HINT_T0);
      const __m512 w0 = _mm512_loadu_ps(wk);
      const __m512 w1 = _mm512_loadu_ps(wk + 16);
#pragma GCC unroll 16
      for (std::size_t i = 0; i < Rows; ++i) {
        const __m512 ai = _mm512_set1_ps(a[i * lda + k + s]);
        acc[s][i][0] = _mm512_fmadd_ps(ai, w0, acc[s][i][0]);
        acc[s][i][1] = _mm512_fmadd_ps(ai, w1, acc[s][i][1]);
      }
    }
  }
  for (; k < kc; ++k) {
    const float* wk = w + k * kNr;
    const __m512 w0 = _mm512_loadu_ps(wk);
    const __m512 w1 = _mm512_loadu_ps(wk + 16);
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * lda + k]);
      acc[0][i][0] = _mm512_fmadd_ps(ai, w0, acc[0][i][0]);
      acc[0][i][1] = _mm512_fmadd_ps(ai, w1, acc[0][i][1]);
    }
  }

#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[0][i][0] = _mm512_add_ps(acc[0][i][0], acc[s][i][0]);
      acc[0][i][1] = _mm512_add_ps(acc[0][i][1], acc[s][i][1]);
    }
  }
#pragma GCC unroll 16
  for (std::size_t i = 0; i < Rows; ++i) {
    _mm512_mask_storeu_ps(c + i * ldc, mask0, acc[0][i][0]);
    _mm512_mask_storeu_ps(c + i * ldc + 16, mask1, acc[0][i][1]);
  }
}


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

const GemmKernels kKernels = {
    3,  // Isa::avx512
    "f32-gemm-8x32-avx512",
    kMr,
    kNr,
    256,  // kc: a 256 x 32 panel is 32 KiB, inside a 48 KiB L1D
    {nullptr, gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>, gemm_ukernel<5>,
     gemm_ukernel<6>, gemm_ukernel<7>, gemm_ukernel<8>},
    fma_probe,
    16 * 16 * 2,
};

}  // namespace
}  // namespace avx512

const GemmKernels* gemm_kernels_avx512() { return &avx512::kKernels; }

}  // namespace lrk
