// AVX-512 GEMM micro-kernels: 8 rows x 32 columns (two zmm vectors), and 12 x 16 for narrow operands.
//
// Why 8x32: 16 accumulators + 2 weight vectors leave 14 of the 32 zmm registers free, and each
// k step issues 2 weight loads and 8 embedded broadcasts for 16 FMAs, so the two FMA ports (not the
// load ports) are the bottleneck. 16 independent accumulators cover the FMA latency (4 cycles x 2
// ports = 8 needed). A 32-wide panel also keeps the layer's output features in whole zmm vectors.
// Rows 1..3 split K over 2-4 accumulator sets to keep at least 8 FMA chains in flight (GEMV).
// The 12x16 variant (one zmm per row: 12 accumulators, 1 load + 12 broadcasts per 12 FMAs) serves
// operands with at most 16 output columns, such as the stages of a rank-16 factorization.
#include <immintrin.h>

#include "lrkernels/ukernel.h"

namespace lrk {
namespace avx512 {
namespace {

#include "../depthwise_generic.h"  // this ISA's own copy, built with this file's flags

// Weight panel bytes fetched ahead of use (8 KiB): without it, panels streamed from DRAM/L3 at
// batch 2..8 ran at half the bandwidth that batch 1 gets.
constexpr std::size_t kPrefetchBytes = 8192;

inline __mmask16 first_lanes(std::size_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Rows x (16 * Vecs) tile. Vecs = 2 is the main 8x32 kernel; Vecs = 1 the narrow 12x16 one.
template <std::size_t Rows, std::size_t Vecs>
void gemm_ukernel(std::size_t nr, std::size_t kc, std::size_t taps, const float* const* a_taps,
                  std::size_t lda, const float* w_taps, const float* init, float* c,
                  std::size_t ldc) {
  constexpr std::size_t Nr = 16 * Vecs;
  constexpr std::size_t Chains = Rows * Vecs;
  constexpr std::size_t Split = Chains >= 8 ? 1 : (Chains >= 4 ? 2 : 4);
  __mmask16 mask[Vecs];
#pragma GCC unroll 2
  for (std::size_t v = 0; v < Vecs; ++v) mask[v] = first_lanes(nr > 16 * v ? nr - 16 * v : 0);

  __m512 acc[Split][Rows][Vecs];
  if (init != nullptr) {
#pragma GCC unroll 2
    for (std::size_t v = 0; v < Vecs; ++v) {
      const __m512 b = _mm512_loadu_ps(init + 16 * v);
#pragma GCC unroll 16
      for (std::size_t i = 0; i < Rows; ++i) acc[0][i][v] = b;
    }
  } else {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 2
      for (std::size_t v = 0; v < Vecs; ++v) {
        acc[0][i][v] = _mm512_maskz_loadu_ps(mask[v], c + i * ldc + 16 * v);
      }
    }
  }
#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 2
      for (std::size_t v = 0; v < Vecs; ++v) acc[s][i][v] = _mm512_setzero_ps();
    }
  }

  // Taps (kernel positions of an implicit-GEMM convolution, or 1 for a plain GEMM) accumulate
  // into the same registers: the tile is loaded and stored once per call.
  for (std::size_t tap = 0; tap < taps; ++tap) {
    const float* a = a_taps[tap];
    const float* w = w_taps + tap * kc * Nr;
    std::size_t k = 0;
    for (; k + Split <= kc; k += Split) {
  #pragma GCC unroll 4
      for (std::size_t s = 0; s < Split; ++s) {
        const float* wk = w + (k + s) * Nr;
        __m512 wv[Vecs];
  #pragma GCC unroll 2
        for (std::size_t v = 0; v < Vecs; ++v) {
          _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchBytes / sizeof(float) + 16 * v),
                       _MM_HINT_T0);
          wv[v] = _mm512_loadu_ps(wk + 16 * v);
        }
  #pragma GCC unroll 16
        for (std::size_t i = 0; i < Rows; ++i) {
          const __m512 ai = _mm512_set1_ps(a[i * lda + k + s]);
  #pragma GCC unroll 2
          for (std::size_t v = 0; v < Vecs; ++v) acc[s][i][v] = _mm512_fmadd_ps(ai, wv[v], acc[s][i][v]);
        }
      }
    }
    for (; k < kc; ++k) {
      const float* wk = w + k * Nr;
      __m512 wv[Vecs];
  #pragma GCC unroll 2
      for (std::size_t v = 0; v < Vecs; ++v) wv[v] = _mm512_loadu_ps(wk + 16 * v);
  #pragma GCC unroll 16
      for (std::size_t i = 0; i < Rows; ++i) {
        const __m512 ai = _mm512_set1_ps(a[i * lda + k]);
  #pragma GCC unroll 2
        for (std::size_t v = 0; v < Vecs; ++v) acc[0][i][v] = _mm512_fmadd_ps(ai, wv[v], acc[0][i][v]);
      }
    }
  }

#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 2
      for (std::size_t v = 0; v < Vecs; ++v) acc[0][i][v] = _mm512_add_ps(acc[0][i][v], acc[s][i][v]);
    }
  }
#pragma GCC unroll 16
  for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 2
    for (std::size_t v = 0; v < Vecs; ++v) _mm512_mask_storeu_ps(c + i * ldc + 16 * v, mask[v], acc[0][i][v]);
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

#include "../transpose_avx.h"  // transpose(): this ISA's own copy

const GemmKernels kNarrowKernels = {
    3,  // Isa::avx512
    "f32-gemm-12x16-avx512",
    12,
    16,
    512,  // kc: a 512 x 16 panel is 32 KiB
    {nullptr, gemm_ukernel<1, 1>, gemm_ukernel<2, 1>, gemm_ukernel<3, 1>, gemm_ukernel<4, 1>,
     gemm_ukernel<5, 1>, gemm_ukernel<6, 1>, gemm_ukernel<7, 1>, gemm_ukernel<8, 1>,
     gemm_ukernel<9, 1>, gemm_ukernel<10, 1>, gemm_ukernel<11, 1>, gemm_ukernel<12, 1>},
    fma_probe,
    16 * 16 * 2,
    nullptr,
    transpose,
    depthwise_taps,
};

const GemmKernels kKernels = {
    3,  // Isa::avx512
    "f32-gemm-8x32-avx512",
    8,
    32,
    256,  // kc: a 256 x 32 panel is 32 KiB, inside a 48 KiB L1D
    {nullptr, gemm_ukernel<1, 2>, gemm_ukernel<2, 2>, gemm_ukernel<3, 2>, gemm_ukernel<4, 2>,
     gemm_ukernel<5, 2>, gemm_ukernel<6, 2>, gemm_ukernel<7, 2>, gemm_ukernel<8, 2>},
    fma_probe,
    16 * 16 * 2,
    // Operands of at most 16 columns (rank-16 stages) would waste half of each 32-wide panel.
    &kNarrowKernels,
    transpose,
    depthwise_taps,
};

}  // namespace
}  // namespace avx512

const GemmKernels* gemm_kernels_avx512() { return &avx512::kKernels; }

}  // namespace lrk
