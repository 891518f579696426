// LSTM and GRU cell updates (the gate nonlinearities and the state update of one time step) with
// branch-free exp/sigmoid/tanh, written once over GCC/Clang vector extensions: each per-ISA file
// sets LRK_RNN_VECTOR_BYTES (64 AVX-512, 32 AVX2, 16 NEON and the x86-64 SSE2 baseline) and the
// compiler emits that ISA's instructions; the row tail runs the same code on single floats.
// (Plain loops do not vectorize here: GCC cannot follow the float/integer bit casts of exp.)
//
// Included by each per-ISA kernel file inside its own anonymous namespace, so every ISA gets its
// own TU-local copy (no code shared across ISA translation units; no libm calls). Accuracy: a few
// float32 ulp against the exact functions (tests/test_recurrent.py); NaN in gives NaN out, +-inf
// gives the limits.

#define LRK_RNN_INLINE inline __attribute__((always_inline))

typedef float VecF __attribute__((vector_size(LRK_RNN_VECTOR_BYTES)));
typedef unsigned VecU __attribute__((vector_size(LRK_RNN_VECTOR_BYTES)));
constexpr std::size_t kLanes = LRK_RNN_VECTOR_BYTES / sizeof(float);

// The lane types of a float type: float -> unsigned, VecF -> VecU.
template <class F>
struct Lanes;
template <>
struct Lanes<float> {
  using U = unsigned;
  static LRK_RNN_INLINE float splat(float v) { return v; }
  static LRK_RNN_INLINE float load(const float* p) { return *p; }
  static LRK_RNN_INLINE void store(float* p, float v) { *p = v; }
};
template <>
struct Lanes<VecF> {
  using U = VecU;
  static LRK_RNN_INLINE VecF splat(float v) { return VecF{} + v; }
  static LRK_RNN_INLINE VecF load(const float* p) {
    VecF v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
  }
  static LRK_RNN_INLINE void store(float* p, VecF v) { __builtin_memcpy(p, &v, sizeof v); }
};

// a < b ? c : d, lane by lane; false for NaN.
template <class F>
LRK_RNN_INLINE F select_less(F a, F b, F c, F d) {
  return a < b ? c : d;
}

// e^x: x = n ln2 + r with |r| <= ln2 / 2, e^r by its degree-7 Taylor polynomial (error below 1e-8
// on that interval), 2^n assembled in the exponent bits. x is clamped to the range where 2^n is a
// normal float (the comparisons keep NaN, which then poisons p).
template <class F>
LRK_RNN_INLINE F rnn_exp(F x) {
  using L = Lanes<F>;
  using U = typename L::U;
  const F lo = L::splat(-87.0f), hi = L::splat(88.0f);
  x = select_less(x, lo, lo, x);
  x = select_less(hi, x, hi, x);
  const F magic =
      L::splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const F t = x * 1.44269504088896341f + magic;
  const F n = t - magic;
  const U n_bits = __builtin_bit_cast(U, t) - __builtin_bit_cast(U, magic);  // n, two's complement
  const F scale = __builtin_bit_cast(F, (n_bits + 127u) << 23);
  const F r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  F p = L::splat(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * scale;
}

template <class F>
LRK_RNN_INLINE F rnn_sigmoid(F x) {
  return 1.0f / (1.0f + rnn_exp(-x));
}

// tanh: 1 - 2 / (e^(2|x|) + 1) with the sign restored; below |x| = 0.25, where that difference
// would cancel, the odd Taylor polynomial to x^9 (error below 1e-8 relative).
template <class F>
LRK_RNN_INLINE F rnn_tanh(F x) {
  using L = Lanes<F>;
  const F zero = L::splat(0.0f);
  const F a = select_less(x, zero, -x, x);
  const F big = 1.0f - 2.0f / (rnn_exp(2.0f * a) + 1.0f);
  const F a2 = a * a;
  F p = L::splat(62.0f / 2835.0f);
  p = p * a2 - 17.0f / 315.0f;
  p = p * a2 + 2.0f / 15.0f;
  p = p * a2 - 1.0f / 3.0f;
  p = p * a2 + 1.0f;
  const F t = select_less(a, L::splat(0.25f), a * p, big);  // NaN: false, big is NaN
  return select_less(x, zero, -t, t);
}

// LSTM hidden units [j, j + lanes) of one row: gate pointers i, f, g, o of gx and gh.
template <class F>
LRK_RNN_INLINE void lstm_units(std::size_t j, const float* const* x, const float* const* h,
                               float* c, float* out) {
  using L = Lanes<F>;
  const F i = rnn_sigmoid(L::load(x[0] + j) + L::load(h[0] + j));
  const F f = rnn_sigmoid(L::load(x[1] + j) + L::load(h[1] + j));
  const F g = rnn_tanh(L::load(x[2] + j) + L::load(h[2] + j));
  const F o = rnn_sigmoid(L::load(x[3] + j) + L::load(h[3] + j));
  const F cn = f * L::load(c + j) + i * g;
  L::store(c + j, cn);
  L::store(out + j, o * rnn_tanh(cn));
}

// LSTM (gates i, f, g, o, each `hidden` wide, as torch orders them), for each of `batch` rows:
//   pre = gx + gh; c' = sigmoid(f) c + sigmoid(i) tanh(g); h = sigmoid(o) tanh(c')
void lstm_cell(std::size_t batch, std::size_t hidden, const float* gx, std::size_t ldgx,
               const float* gh, std::size_t ldgh, float* c, std::size_t ldc, float* h,
               std::size_t ldh) {
  const std::size_t n = hidden;
  for (std::size_t b = 0; b < batch; ++b) {
    const float* xr = gx + b * ldgx;
    const float* hr = gh + b * ldgh;
    const float* x[4] = {xr, xr + n, xr + 2 * n, xr + 3 * n};
    const float* hh[4] = {hr, hr + n, hr + 2 * n, hr + 3 * n};
    float* cb = c + b * ldc;
    float* hb = h + b * ldh;
    std::size_t j = 0;
    for (; j + kLanes <= n; j += kLanes) lstm_units<VecF>(j, x, hh, cb, hb);
    for (; j < n; ++j) lstm_units<float>(j, x, hh, cb, hb);
  }
}

// GRU hidden units [j, j + lanes) of one row: gate pointers r, z, n of gx and gh.
template <class F>
LRK_RNN_INLINE void gru_units(std::size_t j, const float* const* x, const float* const* h,
                              const float* prev, float* out) {
  using L = Lanes<F>;
  const F r = rnn_sigmoid(L::load(x[0] + j) + L::load(h[0] + j));
  const F z = rnn_sigmoid(L::load(x[1] + j) + L::load(h[1] + j));
  const F cand = rnn_tanh(L::load(x[2] + j) + r * L::load(h[2] + j));
  L::store(out + j, (1.0f - z) * cand + z * L::load(prev + j));
}

// GRU (gates r, z, n as torch orders them), for each of `batch` rows:
//   r = sigmoid(gx_r + gh_r); z = sigmoid(gx_z + gh_z); n = tanh(gx_n + r gh_n);
//   h = (1 - z) n + z h_prev            (gh holds W_hh h_prev + b_hh, so r scales b_hn too)
void gru_cell(std::size_t batch, std::size_t hidden, const float* gx, std::size_t ldgx,
              const float* gh, std::size_t ldgh, const float* h_prev, std::size_t ldhp, float* h,
              std::size_t ldh) {
  const std::size_t n = hidden;
  for (std::size_t b = 0; b < batch; ++b) {
    const float* xr = gx + b * ldgx;
    const float* hr = gh + b * ldgh;
    const float* x[3] = {xr, xr + n, xr + 2 * n};
    const float* hh[3] = {hr, hr + n, hr + 2 * n};
    const float* prev = h_prev + b * ldhp;
    float* hb = h + b * ldh;
    std::size_t j = 0;
    for (; j + kLanes <= n; j += kLanes) gru_units<VecF>(j, x, hh, prev, hb);
    for (; j < n; ++j) gru_units<float>(j, x, hh, prev, hb);
  }
}
