// The NEON f16w GEMM micro-kernel template (MR x 8): the f32 kernel of
// ../f32-gemm/neon-template.h with fp16-stored weights, converted to f32 as they are loaded.
// Included inside an anonymous namespace by 8x8-aarch64-neon.cc and 4x8-aarch32-neon.cc.
//
// A k step loads 8 fp16 weights (16 bytes, half the f32 kernel's) and widens them with FCVTL/
// FCVTL2 (aarch64) or two VCVT.F32.F16 (armv7): 2 conversions per 16 FMLAs (8x8) or 8 VMLAs
// (4x8). Register use and the FMA-bound design are the f32 kernel's: 16 (aarch64) / 8 (armv7)
// accumulators, 4 k steps of A per row load, rows 1..3 split over 2-4 accumulator sets (GEMV).
// Batch 1 is bandwidth-bound: each 4 k steps read one 64-byte line of the panel, and the kernel
// prefetches kPrefetchBytes ahead so that the next lines are in flight while it computes.

#if defined(__aarch64__)
constexpr std::size_t kMr = 8;
#else
constexpr std::size_t kMr = 4;
#endif
constexpr std::size_t kNr = 8;
constexpr std::size_t kPrefetchBytes = 512;  // 8 lines (32 k steps) ahead of the loads

// 8 fp16 weights -> two f32 vectors (columns 0-3, 4-7).
__attribute__((always_inline)) inline void load_w8(const std::uint16_t* wk, float32x4_t& w0,
                                                   float32x4_t& w1) {
#if defined(__aarch64__)
  const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(wk));
  w0 = vcvt_f32_f16(vget_low_f16(h));
  w1 = vcvt_high_f32_f16(h);
#else
  const uint16x8_t h = vld1q_u16(wk);
  w0 = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h)));
  w1 = vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h)));
#endif
}

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
                                                     const std::uint16_t* wk,
                                                     const float32x4_t (&av)[Rows]) {
  float32x4_t w0, w1;
  load_w8(wk, w0, w1);
  constexpr std::size_t s = static_cast<std::size_t>(Lane) % Split;
#pragma GCC unroll 8
  for (std::size_t i = 0; i < Rows; ++i) {
    acc[s][i][0] = fma_lane<Lane>(acc[s][i][0], w0, av[i]);
    acc[s][i][1] = fma_lane<Lane>(acc[s][i][1], w1, av[i]);
  }
}

// GCC's scheduler before register allocation adds register moves (aarch64: 47 instead of 42 cycles
// per 4 k of the 8x8 tile on llvm-mca's Neoverse N1 model) or spills (armv7 4x8: 32 instead of 22
// on the Cortex-A57 model); the scheduling after allocation stays.
#if defined(__GNUC__) && !defined(__clang__)
#define LRK_F16W_NEON_NO_PRESCHED __attribute__((optimize("no-schedule-insns")))
#else
#define LRK_F16W_NEON_NO_PRESCHED
#endif

template <std::size_t Rows>
LRK_F16W_NEON_NO_PRESCHED void gemm_ukernel(std::size_t nr, std::size_t kc, std::size_t taps,
                                            const float* const* a_taps, std::size_t lda,
                                            const void* w_bytes, const float* init, float* c,
                                            std::size_t ldc) {
  const std::uint16_t* w_taps = static_cast<const std::uint16_t*>(w_bytes);
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
    const std::uint16_t* w = w_taps + tap * kc * kNr;
    std::size_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      float32x4_t av[Rows];
#pragma GCC unroll 8
      for (std::size_t i = 0; i < Rows; ++i) av[i] = vld1q_f32(a + i * lda + k);
      const std::uint16_t* wk = w + k * kNr;
      __builtin_prefetch(reinterpret_cast<const char*>(wk) + kPrefetchBytes);
      lane_step<0>(acc, wk, av);
      lane_step<1>(acc, wk + kNr, av);
      lane_step<2>(acc, wk + 2 * kNr, av);
      lane_step<3>(acc, wk + 3 * kNr, av);
    }
    for (; k < kc; ++k) {
      float32x4_t w0, w1;
      load_w8(w + k * kNr, w0, w1);
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
