// The AVX2+FMA GEMM micro-kernel template, 6 rows x 16 columns (two ymm vectors). Included inside
// an anonymous namespace by f32-gemm/6x16-avx2.cc (W = float) and f16w-gemm/6x16-avx2.cc
// (W = std::uint16_t: fp16 weights widened by F16C's VCVTPH2PS as they are loaded).
//
// Why 6x16 (as BLIS and XNNPACK on Haswell): 12 accumulators + 2 weight vectors + 1 broadcast use
// 15 of the 16 ymm registers; 12 independent chains cover the FMA latency (5 cycles x 2 ports on
// Haswell, 4 x 2 later), and each k step needs 2 loads (+ 2 conversions for fp16) + 6 broadcasts
// for 12 FMAs. Rows 1..3 split K over 2-4 accumulator sets to keep at least 8 FMA chains in
// flight (GEMV).

constexpr std::size_t kNr = 16;
// Weight panel bytes fetched ahead of use (8 KiB), as in the AVX-512 kernel.
constexpr std::size_t kPrefetchBytes = 8192;

inline __m256 load_weights(const float* w) { return _mm256_loadu_ps(w); }
// 8 fp16 weights widened to f32 (F16C).
inline __m256 load_weights(const std::uint16_t* w) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
}

// Loading 8 ints starting at kMaskTable + 8 - n gives a mask with the first n lanes set.
alignas(64) constexpr int kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

inline __m256i first_lanes(std::size_t n) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - (n > 8 ? 8 : n)));
}

// W is the stored weight type (float, or std::uint16_t holding fp16 bits).
template <std::size_t Rows, class W = float>
void gemm_ukernel(std::size_t nr, std::size_t kc, std::size_t taps, const float* const* a_taps,
                  std::size_t lda, const void* w_bytes, const float* init, float* c,
                  std::size_t ldc) {
  const W* w_taps = static_cast<const W*>(w_bytes);
  constexpr std::size_t Split = Rows >= 4 ? 1 : (Rows == 1 ? 4 : 2);
  // One prefetch per 64-byte line: a k step of fp16 weights is half a line, so with an even
  // Split every other step prefetches.
  constexpr std::size_t StepsPerLine = kNr * sizeof(W) >= 64 ? 1 : 64 / (kNr * sizeof(W));
  constexpr bool EveryStep = Split % StepsPerLine != 0;
  const __m256i mask0 = first_lanes(nr);
  const __m256i mask1 = first_lanes(nr > 8 ? nr - 8 : 0);

  __m256 acc[Split][Rows][2];
  if (init != nullptr) {
    const __m256 b0 = _mm256_loadu_ps(init);
    const __m256 b1 = _mm256_loadu_ps(init + 8);
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[0][i][0] = b0;
      acc[0][i][1] = b1;
    }
  } else {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[0][i][0] = _mm256_maskload_ps(c + i * ldc, mask0);
      acc[0][i][1] = _mm256_maskload_ps(c + i * ldc + 8, mask1);
    }
  }
#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[s][i][0] = _mm256_setzero_ps();
      acc[s][i][1] = _mm256_setzero_ps();
    }
  }

  // Taps (kernel positions of an implicit-GEMM convolution, or 1 for a plain GEMM) accumulate
  // into the same registers: the tile is loaded and stored once per call.
  for (std::size_t tap = 0; tap < taps; ++tap) {
    const float* a = a_taps[tap];
    const W* w = w_taps + tap * kc * kNr;
    std::size_t k = 0;
    for (; k + Split <= kc; k += Split) {
#pragma GCC unroll 4
      for (std::size_t s = 0; s < Split; ++s) {
        const W* wk = w + (k + s) * kNr;
        if (EveryStep || s % StepsPerLine == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchBytes / sizeof(W)), _MM_HINT_T0);
        }
        const __m256 w0 = load_weights(wk);
        const __m256 w1 = load_weights(wk + 8);
#pragma GCC unroll 16
        for (std::size_t i = 0; i < Rows; ++i) {
          const __m256 ai = _mm256_broadcast_ss(a + i * lda + k + s);
          acc[s][i][0] = _mm256_fmadd_ps(ai, w0, acc[s][i][0]);
          acc[s][i][1] = _mm256_fmadd_ps(ai, w1, acc[s][i][1]);
        }
      }
    }
    for (; k < kc; ++k) {
      const W* wk = w + k * kNr;
      const __m256 w0 = load_weights(wk);
      const __m256 w1 = load_weights(wk + 8);
#pragma GCC unroll 16
      for (std::size_t i = 0; i < Rows; ++i) {
        const __m256 ai = _mm256_broadcast_ss(a + i * lda + k);
        acc[0][i][0] = _mm256_fmadd_ps(ai, w0, acc[0][i][0]);
        acc[0][i][1] = _mm256_fmadd_ps(ai, w1, acc[0][i][1]);
      }
    }
  }

#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[0][i][0] = _mm256_add_ps(acc[0][i][0], acc[s][i][0]);
      acc[0][i][1] = _mm256_add_ps(acc[0][i][1], acc[s][i][1]);
    }
  }
#pragma GCC unroll 16
  for (std::size_t i = 0; i < Rows; ++i) {
    _mm256_maskstore_ps(c + i * ldc, mask0, acc[0][i][0]);
    _mm256_maskstore_ps(c + i * ldc + 8, mask1, acc[0][i][1]);
  }
}
