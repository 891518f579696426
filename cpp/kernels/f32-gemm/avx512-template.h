// The AVX-512 GEMM micro-kernel template, Rows x (16 * Vecs). Included inside an anonymous
// namespace by 8x32-avx512.cc and 12x16-avx512.cc (each gets its own TU-local copy), and by the
// f16w family's AVX-512 kernels with W = std::uint16_t (fp16 weights converted as they are loaded).
//
// Why 8x32: 16 accumulators + 2 weight vectors leave 14 of the 32 zmm registers free, and each
// k step issues 2 weight loads and 8 embedded broadcasts for 16 FMAs, so the two FMA ports (not the
// load ports) are the bottleneck. 16 independent accumulators cover the FMA latency (4 cycles x 2
// ports = 8 needed). A 32-wide panel also keeps the layer's output features in whole zmm vectors.
// Rows 1..3 split K over 2-4 accumulator sets to keep at least 8 FMA chains in flight (GEMV).
// The 12x16 variant (one zmm per row: 12 accumulators, 1 load + 12 broadcasts per 12 FMAs) serves
// operands with at most 16 output columns, such as the stages of a rank-16 factorization.

// Weight panel bytes fetched ahead of use (8 KiB): without it, panels streamed from DRAM/L3 at
// batch 2..8 ran at half the bandwidth that batch 1 gets.
constexpr std::size_t kPrefetchBytes = 8192;

// 16 weights of one k step: f32 as stored, or fp16 (F16C) widened to f32.
inline __m512 load_weights(const float* w) { return _mm512_loadu_ps(w); }
// (The all-lanes maskz form compiles to the plain VCVTPH2PS; GCC 12's _mm512_cvtph_ps passes an
// undefined vector that draws -Wmaybe-uninitialized.)
inline __m512 load_weights(const std::uint16_t* w) {
  return _mm512_maskz_cvtph_ps(static_cast<__mmask16>(0xFFFF),
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
}

inline __mmask16 first_lanes(std::size_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Rows x (16 * Vecs) tile. Vecs = 2 is the main 8x32 kernel; Vecs = 1 the narrow 12x16 one.
// W is the stored weight type (float, or std::uint16_t holding fp16 bits).
template <std::size_t Rows, std::size_t Vecs, class W = float>
void gemm_ukernel(std::size_t nr, std::size_t kc, std::size_t taps, const float* const* a_taps,
                  std::size_t lda, const void* w_bytes, const float* init, float* c,
                  std::size_t ldc) {
  const W* w_taps = static_cast<const W*>(w_bytes);
  constexpr std::size_t Nr = 16 * Vecs;
  constexpr std::size_t Chains = Rows * Vecs;
  constexpr std::size_t Split = Chains >= 8 ? 1 : (Chains >= 4 ? 2 : 4);
  // One prefetch per 64-byte line of weights: an fp16 32-wide k step is one line, an fp16 16-wide
  // one half a line (then every other step of the Split-unrolled loop).
  constexpr std::size_t VecsPerLine = 64 / (16 * sizeof(W));
  constexpr std::size_t StepsPerLine = Nr * sizeof(W) >= 64 ? 1 : 64 / (Nr * sizeof(W));
  constexpr bool EveryStep = Split % StepsPerLine != 0;
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
    const W* w = w_taps + tap * kc * Nr;
    std::size_t k = 0;
    for (; k + Split <= kc; k += Split) {
#pragma GCC unroll 4
      for (std::size_t s = 0; s < Split; ++s) {
        const W* wk = w + (k + s) * Nr;
        __m512 wv[Vecs];
#pragma GCC unroll 2
        for (std::size_t v = 0; v < Vecs; ++v) {
          if (v % VecsPerLine == 0 && (EveryStep || s % StepsPerLine == 0)) {
            _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchBytes / sizeof(W) + 16 * v),
                         _MM_HINT_T0);
          }
          wv[v] = load_weights(wk + 16 * v);
        }
#pragma GCC unroll 16
        for (std::size_t i = 0; i < Rows; ++i) {
          const __m512 ai = _mm512_set1_ps(a[i * lda + k + s]);
#pragma GCC unroll 2
          for (std::size_t v = 0; v < Vecs; ++v)
            acc[s][i][v] = _mm512_fmadd_ps(ai, wv[v], acc[s][i][v]);
        }
      }
    }
    for (; k < kc; ++k) {
      const W* wk = w + k * Nr;
      __m512 wv[Vecs];
#pragma GCC unroll 2
      for (std::size_t v = 0; v < Vecs; ++v) wv[v] = load_weights(wk + 16 * v);
#pragma GCC unroll 16
      for (std::size_t i = 0; i < Rows; ++i) {
        const __m512 ai = _mm512_set1_ps(a[i * lda + k]);
#pragma GCC unroll 2
        for (std::size_t v = 0; v < Vecs; ++v)
          acc[0][i][v] = _mm512_fmadd_ps(ai, wv[v], acc[0][i][v]);
      }
    }
  }

#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 2
      for (std::size_t v = 0; v < Vecs; ++v)
        acc[0][i][v] = _mm512_add_ps(acc[0][i][v], acc[s][i][v]);
    }
  }
#pragma GCC unroll 16
  for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 2
    for (std::size_t v = 0; v < Vecs; ++v)
      _mm512_mask_storeu_ps(c + i * ldc + 16 * v, mask[v], acc[0][i][v]);
  }
}
