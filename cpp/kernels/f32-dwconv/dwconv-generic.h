// Depthwise (per-channel) filter over taps, written as plain loops over contiguous channels.
//
// Included by each per-ISA kernel file inside its own anonymous namespace, so every ISA gets its
// own TU-local copy vectorized with that file's flags (no code shared across ISA translation
// units). out[p * ldo + c] = sum_t weights[t * channels + c] * src[t][p * step + c]
inline void depthwise_taps(std::size_t pixels, std::size_t channels, std::size_t taps,
                           const float* const* src, std::size_t step, const float* weights,
                           float* out, std::size_t ldo) {
  for (std::size_t p = 0; p < pixels; ++p) {
    float* __restrict o = out + p * ldo;
    const float* __restrict s0 = src[0] + p * step;
    for (std::size_t c = 0; c < channels; ++c) o[c] = weights[c] * s0[c];
    for (std::size_t t = 1; t < taps; ++t) {
      const float* __restrict st = src[t] + p * step;
      const float* __restrict wt = weights + t * channels;
      for (std::size_t c = 0; c < channels; ++c) o[c] += wt[c] * st[c];
    }
  }
}
