// The NEON GEMM micro-kernel template (MR x 8). Included inside an anonymous namespace by
// 8x8-aarch64-neon.cc and 4x8-aarch32-neon.cc.
//
// aarch64 (32 q registers): 16 accumulators + 8 row vectors of A + 2 weight vectors = 26 registers.
// A is read 4 k-steps at a time per row (one 128-bit load) and used by lane, so per 4 k-steps the
// kernel issues 8 A loads + 8 weight loads for 64 FMLAs: the FMA pipes (1 on Cortex-A53/A57/A72,
// 2 on A76/A78) stay the bottleneck, and 16 chains cover the 4-7 cycle FMLA latency.
// armv7 (16 q registers): 8 accumulators + 4 row vectors + 2 weight vectors = 14 registers, with
// VMLA by lane (A32 NEON has no fused multiply-add by scalar).
// Rows 1..3 split the lanes over 2-4 accumulator sets to keep enough independent chains (GEMV).

#if defined(__aarch64__)
constexpr std::size_t kMr = 8;
#else
constexpr std::size_t kMr = 4;
#endif
constexpr std::size_t kNr = 8;

// acc + w * a[lane], lane a compile-time constant.
template <int Lane>
inline float32x4_t fma_lane(float32x4_t acc, float32x4_t w, float32x4_t a) {
#if defined(__aarch64__)
  return vfmaq_laneq_f32(acc, w, a, Lane);
#else
  return Lane < 2 ? vmlaq_lane_f32(acc, w, vget_low_f32(a), Lane & 1)
                  : vmlaq_lane_f32(acc, w, vget_high_f32(a), Lane & 1);
#endif
}

inline float32x4_t fma_scalar(float32x4_t acc, float32x4_t w, float a) {
#if defined(__aarch64__)
  return vfmaq_n_f32(acc, w, a);
#else
  return vmlaq_n_f32(acc, w, a);
#endif
}

// One k step of a tile using lane `Lane` of each row's 4-step A vector. Accumulators are passed
// by reference and everything is force-inlined, so they stay in registers.
template <int Lane, std::size_t Split, std::size_t Rows>
__attribute__((always_inline)) inline void lane_step(float32x4_t (&acc)[Split][Rows][2],
                                                     const float* wk,
                                                     const float32x4_t (&av)[Rows]) {
  const float32x4_t w0 = vld1q_f32(wk);
  const float32x4_t w1 = vld1q_f32(wk + 4);
  constexpr std::size_t s = static_cast<std::size_t>(Lane) % Split;
#pragma GCC unroll 8
  for (std::size_t i = 0; i < Rows; ++i) {
    acc[s][i][0] = fma_lane<Lane>(acc[s][i][0], w0, av[i]);
    acc[s][i][1] = fma_lane<Lane>(acc[s][i][1], w1, av[i]);
  }
}

template <std::size_t Rows>
void gemm_ukernel(std::size_t nr, std::size_t kc, std::size_t taps, const float* const* a_taps,
                  std::size_t lda, const void* w_bytes, const float* init, float* c,
                  std::size_t ldc) {
  const float* w_taps = static_cast<const float*>(w_bytes);
  constexpr std::size_t Split = Rows >= 4 ? 1 : (Rows == 1 ? 4 : 2);
  float32x4_t acc[Split][Rows][2];
  if (init != nullptr) {
    const float32x4_t b0 = vld1q_f32(init);
    const float32x4_t b1 = vld1q_f32(init + 4);
#pragma GCC unroll 8
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[0][i][0] = b0;
      acc[0][i][1] = b1;
    }
  } else if (nr == kNr) {
#pragma GCC unroll 8
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[0][i][0] = vld1q_f32(c + i * ldc);
      acc[0][i][1] = vld1q_f32(c + i * ldc + 4);
    }
  } else {
#pragma GCC unroll 8
    for (std::size_t i = 0; i < Rows; ++i) {
      float row[kNr] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (std::size_t j = 0; j < nr; ++j) row[j] = c[i * ldc + j];
      acc[0][i][0] = vld1q_f32(row);
      acc[0][i][1] = vld1q_f32(row + 4);
    }
  }
#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 8
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[s][i][0] = vdupq_n_f32(0.0f);
      acc[s][i][1] = vdupq_n_f32(0.0f);
    }
  }

  // Taps (kernel positions of an implicit-GEMM convolution, or 1 for a plain GEMM) accumulate
  // into the same registers: the tile is loaded and stored once per call.
  for (std::size_t tap = 0; tap < taps; ++tap) {
    const float* a = a_taps[tap];
    const float* w = w_taps + tap * kc * kNr;
    std::size_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      float32x4_t av[Rows];
#pragma GCC unroll 8
      for (std::size_t i = 0; i < Rows; ++i) av[i] = vld1q_f32(a + i * lda + k);
      const float* wk = w + k * kNr;
      lane_step<0>(acc, wk, av);
      lane_step<1>(acc, wk + kNr, av);
      lane_step<2>(acc, wk + 2 * kNr, av);
      lane_step<3>(acc, wk + 3 * kNr, av);
    }
    for (; k < kc; ++k) {
      const float32x4_t w0 = vld1q_f32(w + k * kNr);
      const float32x4_t w1 = vld1q_f32(w + k * kNr + 4);
#pragma GCC unroll 8
      for (std::size_t i = 0; i < Rows; ++i) {
        const float ai = a[i * lda + k];
        acc[0][i][0] = fma_scalar(acc[0][i][0], w0, ai);
        acc[0][i][1] = fma_scalar(acc[0][i][1], w1, ai);
      }
    }
  }

#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 8
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[0][i][0] = vaddq_f32(acc[0][i][0], acc[s][i][0]);
      acc[0][i][1] = vaddq_f32(acc[0][i][1], acc[s][i][1]);
    }
  }
  if (nr == kNr) {
#pragma GCC unroll 8
    for (std::size_t i = 0; i < Rows; ++i) {
      vst1q_f32(c + i * ldc, acc[0][i][0]);
      vst1q_f32(c + i * ldc + 4, acc[0][i][1]);
    }
  } else {
#pragma GCC unroll 8
    for (std::size_t i = 0; i < Rows; ++i) {
      float row[kNr];
      vst1q_f32(row, acc[0][i][0]);
      vst1q_f32(row + 4, acc[0][i][1]);
      for (std::size_t j = 0; j < nr; ++j) c[i * ldc + j] = row[j];
    }
  }
}
