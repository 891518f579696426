// The NEON int8 GEMM micro-kernel template without dot products (MR x 8, K in groups of 4): the
// Cortex-A53/A57/A72 and armv7 path. Included inside an anonymous namespace by
// 4x8c4-aarch64-neon.cc and 2x8c4-aarch32-neon.cc.
//
// Per row and pair of k groups: an 8-byte A load, each group's 4 bytes broadcast to every 32-bit
// lane (DUP); SMULL (SMULL2 on aarch64) with a group's 16 weight bytes of 2 columns gives 8 int16
// products; SMLAL adds the next group's products into the same int16 lanes (|a*w + a'*w'| <=
// 2 * 128 * 127 = 32512: exact only because |w| <= 127); SADALP folds lane pairs into int32
// accumulators, 4 lanes per 2 columns (partial sums of k%4 in {0,1} and {2,3}), added pairwise
// (ADDP) once at the end. Per row and 2 groups: 4 SMULL + 4 SMLAL + 4 SADALP + 2 DUP for 64 MACs.
// On the A57/A72 the multiplies issue on F0 only (1 per cycle) and SADALP on F1: 8 cycles per 64
// MACs, 8 MACs per cycle, twice the f32 kernel's 4 (one 4-lane FMLA per cycle).
// aarch64: 4 rows = 16 accumulators + 4 weight vectors + 4 A vectors + product temporaries.
// armv7 (16 q registers): 2 rows = 8 accumulators + 4 weight vectors + 2 A registers + temporaries.

#if defined(__aarch64__)
constexpr std::size_t kMr = 4;
#else
constexpr std::size_t kMr = 2;
#endif
constexpr std::size_t kNr = 8;

// int16 products of the group held in `a` (its 4 bytes in every 32-bit lane) with columns
// 0-1 (low half of w) or 2-3 (high half) of a 4-column weight vector; the _acc forms add them.
#if defined(__aarch64__)
using Bcast = int8x16_t;
inline Bcast bcast_lane0(int8x8_t a2) {
  return vreinterpretq_s8_s32(vdupq_lane_s32(vreinterpret_s32_s8(a2), 0));
}
inline Bcast bcast_lane1(int8x8_t a2) {
  return vreinterpretq_s8_s32(vdupq_lane_s32(vreinterpret_s32_s8(a2), 1));
}
inline Bcast bcast_value(std::int32_t v) { return vreinterpretq_s8_s32(vdupq_n_s32(v)); }
inline int16x8_t mul_lo(int8x16_t w, Bcast a) { return vmull_s8(vget_low_s8(w), vget_low_s8(a)); }
inline int16x8_t mul_hi(int8x16_t w, Bcast a) { return vmull_high_s8(w, a); }
inline int16x8_t mla_lo(int16x8_t p, int8x16_t w, Bcast a) {
  return vmlal_s8(p, vget_low_s8(w), vget_low_s8(a));
}
inline int16x8_t mla_hi(int16x8_t p, int8x16_t w, Bcast a) { return vmlal_high_s8(p, w, a); }
#else
using Bcast = int8x8_t;
inline Bcast bcast_lane0(int8x8_t a2) {
  return vreinterpret_s8_s32(vdup_lane_s32(vreinterpret_s32_s8(a2), 0));
}
inline Bcast bcast_lane1(int8x8_t a2) {
  return vreinterpret_s8_s32(vdup_lane_s32(vreinterpret_s32_s8(a2), 1));
}
inline Bcast bcast_value(std::int32_t v) { return vreinterpret_s8_s32(vdup_n_s32(v)); }
inline int16x8_t mul_lo(int8x16_t w, Bcast a) { return vmull_s8(vget_low_s8(w), a); }
inline int16x8_t mul_hi(int8x16_t w, Bcast a) { return vmull_s8(vget_high_s8(w), a); }
inline int16x8_t mla_lo(int16x8_t p, int8x16_t w, Bcast a) {
  return vmlal_s8(p, vget_low_s8(w), a);
}
inline int16x8_t mla_hi(int16x8_t p, int8x16_t w, Bcast a) {
  return vmlal_s8(p, vget_high_s8(w), a);
}
#endif

// [c0a, c0b, c1a, c1b] + [c2a, c2b, c3a, c3b] -> [c0, c1, c2, c3]
inline int32x4_t pair_sums(int32x4_t lo, int32x4_t hi) {
#if defined(__aarch64__)
  return vpaddq_s32(lo, hi);
#else
  return vcombine_s32(vpadd_s32(vget_low_s32(lo), vget_high_s32(lo)),
                      vpadd_s32(vget_low_s32(hi), vget_high_s32(hi)));
#endif
}

// GCC's scheduler before register allocation hoists every row's products above the SADALPs (16
// int16 temporaries on top of 16 accumulators) and spills 5 accumulators (llvm-mca, Cortex-A57
// model: 37 instead of 32 cycles per 8 k of the 4x8 tile); the scheduling after allocation stays.
#if defined(__GNUC__) && !defined(__clang__)
#define LRK_QD8_NEON_NO_PRESCHED __attribute__((optimize("no-schedule-insns")))
#else
#define LRK_QD8_NEON_NO_PRESCHED
#endif

template <std::size_t Rows>
LRK_QD8_NEON_NO_PRESCHED void gemm_ukernel(std::size_t nr, std::size_t kgroups, std::size_t taps,
                                           const std::int8_t* const* a_taps, std::size_t lda,
                                           const std::int8_t* w, std::int32_t* c, std::size_t ldc) {
  // acc[i][v]: row i, columns 2v and 2v+1, two partial sums each.
  int32x4_t acc[Rows][4];
#pragma GCC unroll 4
  for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 4
    for (std::size_t v = 0; v < 4; ++v) acc[i][v] = vdupq_n_s32(0);
  }

  for (std::size_t tap = 0; tap < taps; ++tap) {
    const std::int8_t* a = a_taps[tap];
    std::size_t g = 0;
    // Two groups per step: two products per int16 lane before SADALP widens them.
    for (; g + 2 <= kgroups; g += 2, w += 2 * 4 * kNr) {
      const int8x16_t w0 = vld1q_s8(w);       // group g, columns 0-3
      const int8x16_t w1 = vld1q_s8(w + 16);  // group g, columns 4-7
      const int8x16_t w2 = vld1q_s8(w + 32);  // group g + 1, columns 0-3
      const int8x16_t w3 = vld1q_s8(w + 48);  // group g + 1, columns 4-7
#pragma GCC unroll 4
      for (std::size_t i = 0; i < Rows; ++i) {
        const int8x8_t a2 = vld1_s8(a + i * lda + 4 * g);
        const Bcast a0 = bcast_lane0(a2), a1 = bcast_lane1(a2);
        acc[i][0] = vpadalq_s16(acc[i][0], mla_lo(mul_lo(w0, a0), w2, a1));
        acc[i][1] = vpadalq_s16(acc[i][1], mla_hi(mul_hi(w0, a0), w2, a1));
        acc[i][2] = vpadalq_s16(acc[i][2], mla_lo(mul_lo(w1, a0), w3, a1));
        acc[i][3] = vpadalq_s16(acc[i][3], mla_hi(mul_hi(w1, a0), w3, a1));
      }
    }
    if (g < kgroups) {  // the last group of an odd count: 4 A bytes, no reading past the row
      const int8x16_t w0 = vld1q_s8(w);
      const int8x16_t w1 = vld1q_s8(w + 16);
      w += 4 * kNr;
#pragma GCC unroll 4
      for (std::size_t i = 0; i < Rows; ++i) {
        std::int32_t bits;
        __builtin_memcpy(&bits, a + i * lda + 4 * g, sizeof(bits));
        const Bcast a0 = bcast_value(bits);
        acc[i][0] = vpadalq_s16(acc[i][0], mul_lo(w0, a0));
        acc[i][1] = vpadalq_s16(acc[i][1], mul_hi(w0, a0));
        acc[i][2] = vpadalq_s16(acc[i][2], mul_lo(w1, a0));
        acc[i][3] = vpadalq_s16(acc[i][3], mul_hi(w1, a0));
      }
    }
  }

#pragma GCC unroll 4
  for (std::size_t i = 0; i < Rows; ++i) {
    const int32x4_t c0 = pair_sums(acc[i][0], acc[i][1]);
    const int32x4_t c1 = pair_sums(acc[i][2], acc[i][3]);
    if (nr == kNr) {
      vst1q_s32(c + i * ldc, c0);
      vst1q_s32(c + i * ldc + 4, c1);
    } else {
      std::int32_t row[kNr];
      vst1q_s32(row, c0);
      vst1q_s32(row + 4, c1);
      for (std::size_t j = 0; j < nr; ++j) c[i * ldc + j] = row[j];
    }
  }
}
