// The int8 path's element-wise steps, written once as plain loops over LRK_QD8_LANES independent
// lanes so that each per-ISA file's flags vectorize them (16 lanes AVX-512, 8 AVX2, 4 NEON and the
// SSE2 baseline). Every float operation is one float32 rounding, never contracted into an FMA
// (CMakeLists.txt compiles these files with -ffp-contract=off: GCC contracts across statements),
// so every ISA computes lrkernels.reference.quantize_rows' values.
// Included inside each per-ISA file's anonymous namespace (TU-local copies, no libm calls).

constexpr std::size_t kLanes = LRK_QD8_LANES;

// Round to nearest even for |v| < 2^22 (the values rounded here are within about +-383).
inline float round_even(float v) {
  const float magic = 12582912.0f;  // 1.5 * 2^23
  const float shifted = v + magic;
  return shifted - magic;
}

typedef float VecF __attribute__((vector_size(LRK_QD8_LANES * sizeof(float))));

void range(std::size_t k, const float* x, QD8RowQuant* r) {
  // Per-lane minimum, maximum and (v - v) sums: 0 while finite, NaN after a NaN or +-inf. Vector
  // extensions, not arrays: GCC does not vectorize a min/max reduction over plain lanes.
  VecF lo = {}, hi = {}, bad = {};
  std::size_t i = 0;
  for (; i + kLanes <= k; i += kLanes) {
    VecF v;
    __builtin_memcpy(&v, x + i, sizeof v);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    const VecF d = v - v;
    bad = bad + d;
  }
  float l = r->lo, h = r->hi, b = 0.0f;
  for (; i < k; ++i) {
    const float v = x[i];
    l = v < l ? v : l;
    h = v > h ? v : h;
    const float d = v - v;
    b = b + d;
  }
  bool finite = r->finite && b == 0.0f;
  for (std::size_t j = 0; j < kLanes; ++j) {
    l = lo[j] < l ? lo[j] : l;
    h = hi[j] > h ? hi[j] : h;
    finite = finite && bad[j] == 0.0f;
  }
  r->lo = l;
  r->hi = h;
  r->finite = finite;
}

void quantize(std::size_t k, std::size_t kpad, const float* x, const QD8RowQuant* r, int offset,
              std::int8_t* q) {
  if (r->zero_range) {
    for (std::size_t i = 0; i < kpad; ++i) q[i] = static_cast<std::int8_t>(offset);
    return;
  }
  const float inv = 1.0f / r->scale;
  const int zero = r->zero;
  std::size_t i = 0;
#if defined(__AVX512F__)
  // GCC vectorizes the loop below with ymm and a pack/permute chain per 32 bytes; VPMOVDB narrows
  // 16 lanes at once (the values are clamped first, so truncation is exact). Same arithmetic.
  {
    const __m512 vinv = _mm512_set1_ps(inv), magic = _mm512_set1_ps(12582912.0f);
    const __m512i vzero = _mm512_set1_epi32(zero), lo = _mm512_set1_epi32(-128),
                  hi = _mm512_set1_epi32(127), voff = _mm512_set1_epi32(offset);
    for (; i + 16 <= k; i += 16) {
      const __m512 scaled = _mm512_mul_ps(_mm512_loadu_ps(x + i), vinv);
      const __m512 rounded = _mm512_sub_ps(_mm512_add_ps(scaled, magic), magic);
      // maskz forms with all lanes: GCC 12 warns of an uninitialized source in the plain ones.
      const __mmask16 all = 0xFFFF;
      __m512i v = _mm512_add_epi32(_mm512_maskz_cvttps_epi32(all, rounded), vzero);
      v = _mm512_maskz_min_epi32(all, _mm512_maskz_max_epi32(all, v, lo), hi);
      _mm512_mask_cvtepi32_storeu_epi8(q + i, all, _mm512_add_epi32(v, voff));
    }
  }
#endif
  for (; i < k; ++i) {
    const float scaled = x[i] * inv;
    int v = static_cast<int>(round_even(scaled)) + zero;
    v = v < -128 ? -128 : v;
    v = v > 127 ? 127 : v;
    q[i] = static_cast<std::int8_t>(static_cast<std::uint8_t>(v + offset));
  }
  for (std::size_t i = k; i < kpad; ++i) {
    q[i] = static_cast<std::int8_t>(static_cast<std::uint8_t>(zero + offset));
  }
}

void dequantize_row(std::size_t cols, const std::int32_t* acc, const QD8RowQuant* r, int offset,
                    const float* wscale, const std::int32_t* wsum, const float* bias, float* y) {
  if (!r->finite) {
    for (std::size_t j = 0; j < cols; ++j) y[j] = __builtin_nanf("");
    return;
  }
  const std::uint32_t zz = static_cast<std::uint32_t>(r->zero + offset);
  const float sx = r->scale;
  // The true difference fits in int32 (K <= 65536); unsigned arithmetic wraps to it.
  for (std::size_t j = 0; j < cols; ++j) {
    const std::uint32_t correction = zz * static_cast<std::uint32_t>(wsum[j]);
    const std::int32_t d =
        static_cast<std::int32_t>(static_cast<std::uint32_t>(acc[j]) - correction);
    const float s = sx * wscale[j];
    y[j] = static_cast<float>(d) * s;
  }
  if (bias != nullptr) {
    for (std::size_t j = 0; j < cols; ++j) y[j] = y[j] + bias[j];
  }
}

void dequantize(std::size_t rows, std::size_t cols, const std::int32_t* acc, std::size_t ldacc,
                const QD8RowQuant* r, std::size_t r_step, int offset, const float* wscale,
                const std::int32_t* wsum, const float* bias, float* y, std::size_t ldy) {
  if (r_step != 0 || rows == 1 || !r->finite) {
    for (std::size_t i = 0; i < rows; ++i) {
      dequantize_row(cols, acc + i * ldacc, r + i * r_step, offset, wscale, wsum, bias,
                     y + i * ldy);
    }
    return;
  }
  // Rows sharing one quantization (a block of pixels): the per-column correction and scale are
  // computed once per chunk of columns, the same values dequantize_row computes for each row.
  constexpr std::size_t kChunk = 256;
  std::uint32_t correction[kChunk];
  float scale[kChunk];
  const std::uint32_t zz = static_cast<std::uint32_t>(r->zero + offset);
  for (std::size_t j0 = 0; j0 < cols; j0 += kChunk) {
    const std::size_t n = cols - j0 < kChunk ? cols - j0 : kChunk;
    for (std::size_t j = 0; j < n; ++j) {
      correction[j] = zz * static_cast<std::uint32_t>(wsum[j0 + j]);
      scale[j] = r->scale * wscale[j0 + j];
    }
    for (std::size_t i = 0; i < rows; ++i) {
      const std::int32_t* a = acc + i * ldacc + j0;
      float* yi = y + i * ldy + j0;
      for (std::size_t j = 0; j < n; ++j) {
        const std::int32_t d =
            static_cast<std::int32_t>(static_cast<std::uint32_t>(a[j]) - correction[j]);
        yi[j] = static_cast<float>(d) * scale[j];
      }
      if (bias != nullptr) {
        for (std::size_t j = 0; j < n; ++j) yi[j] = yi[j] + bias[j0 + j];
      }
    }
  }
}
