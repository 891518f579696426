// f16 GEMM micro-kernels for ARMv8.2 fp16 arithmetic (Cortex-A76/A78, Pi 5): 4 rows x 16
// columns, the f16w contract (f32 A, fp16 panel, f32 bias / C) with the multiply-adds in fp16.
//
// Arithmetic: each 8 k of a row of A are converted to fp16 (FCVTN/FCVTN2) and used by element:
// FMLA v.8h, w.8h, a.h[lane] adds 8 products per instruction, twice the f32 kernel's. The fp16
// accumulators hold one block of kSpill = 32 k and are then added into f32 accumulators (FCVTL/
// FCVTL2 + FADD, "spills"), so the fp16 rounding error is that of a 32-term sum, not of K terms:
// |error| <= ~(kSpill + 1) 2^-11 sum |a w| (+ f32 rounding of the K/32 block sums). Measured on
// Gaussian data (numpy emulation of this arithmetic, 8 x 1000 outputs): relative max error vs
// fp32 9.4e-4 at K = 1280, 8.9e-4 at K = 4096 (16: 8.0e-4 / 7.1e-4; 64: 1.4e-3), within the
// 3e-3 goal; 32 halves the spill cost of 16. fp16 range: products and 32-term sums must stay
// below 65504 (activations of a few hundred times the weights' scale overflow to inf).
//
// Registers (32 x 128-bit): 8 fp16 accumulators (4 rows x 16 columns), 16 f32 accumulators, 4 A
// vectors (by-element operands must be in v0-v15 for .h lanes), 2 weight vectors = 30. 8 rows x 8
// columns would need 8 + 16 + 8 A + 1 W = 33, and 16 columns halve the A conversions per FMLA.
// Per 8 k: 64 FMLA (.8h), 8 FCVTN, 16 weight loads (ldr q / ldp); per 32 k: 8 x (2 FCVTL + 2
// FADD). Rows 1-3 split the k lanes over 2-4 fp16 accumulator sets (FMLA latency 4 on the A76),
// summed in fp16 before the spill (a shorter chain than one set's: within the bound above).
//
// GCC (12) turns vfmaq_laneq_f16 into DUP + vector FMLA when a lane is used twice (as here: two
// weight vectors per k); the FMLA by element is written as inline asm ("x": v0-v15).
#if defined(__aarch64__)
#include <arm_neon.h>

#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

constexpr std::size_t kMr = 4;
constexpr std::size_t kNr = 16;
constexpr std::size_t kSpill = 32;            // k per fp16 accumulation block (multiple of 8)
constexpr std::size_t kPrefetchBytes = 1024;  // 4 eight-k steps (16 lines) ahead of the loads

static_assert(kSpill % 8 == 0, "a block is whole 8-k steps");

// acc + w * a[Lane] in fp16: FMLA (by element), one instruction.
template <int Lane>
__attribute__((always_inline)) inline float16x8_t fmla_lane(float16x8_t acc, float16x8_t w,
                                                            float16x8_t a) {
  __asm__("fmla %0.8h, %1.8h, %2.h[%3]" : "+w"(acc) : "w"(w), "x"(a), "i"(Lane));
  return acc;
}

__attribute__((always_inline)) inline float16x8_t load_w(const std::uint16_t* p) {
  return vreinterpretq_f16_u16(vld1q_u16(p));
}

// 8 floats -> 8 halves (round to nearest even, as the weights).
__attribute__((always_inline)) inline float16x8_t load_a8(const float* p) {
  return vcvt_high_f16_f32(vcvt_f16_f32(vld1q_f32(p)), vld1q_f32(p + 4));
}

// One k step: lane `Lane` of each row's 8-k A vector times the 16 weights at wk.
template <int Lane, std::size_t Split, std::size_t Rows>
__attribute__((always_inline)) inline void lane_step(float16x8_t (&acc)[Split][Rows][2],
                                                     const std::uint16_t* wk,
                                                     const float16x8_t (&av)[Rows]) {
  const float16x8_t w0 = load_w(wk + Lane * kNr);
  const float16x8_t w1 = load_w(wk + Lane * kNr + 8);
  constexpr std::size_t s = static_cast<std::size_t>(Lane) % Split;
#pragma GCC unroll 4
  for (std::size_t i = 0; i < Rows; ++i) {
    acc[s][i][0] = fmla_lane<Lane>(acc[s][i][0], w0, av[i]);
    acc[s][i][1] = fmla_lane<Lane>(acc[s][i][1], w1, av[i]);
  }
}

// 8 k steps from a (row i at a + i * lda) and the panel at wk.
template <std::size_t Split, std::size_t Rows>
__attribute__((always_inline)) inline void step8(float16x8_t (&acc)[Split][Rows][2], const float* a,
                                                 std::size_t lda, const std::uint16_t* wk) {
  float16x8_t av[Rows];
#pragma GCC unroll 4
  for (std::size_t i = 0; i < Rows; ++i) av[i] = load_a8(a + i * lda);
  // 8 k x 32 bytes = 4 lines of the panel per step.
  const char* pf = reinterpret_cast<const char*>(wk) + kPrefetchBytes;
  __builtin_prefetch(pf);
  __builtin_prefetch(pf + 64);
  __builtin_prefetch(pf + 128);
  __builtin_prefetch(pf + 192);
  lane_step<0>(acc, wk, av);
  lane_step<1>(acc, wk, av);
  lane_step<2>(acc, wk, av);
  lane_step<3>(acc, wk, av);
  lane_step<4>(acc, wk, av);
  lane_step<5>(acc, wk, av);
  lane_step<6>(acc, wk, av);
  lane_step<7>(acc, wk, av);
}

template <std::size_t Split, std::size_t Rows>
__attribute__((always_inline)) inline void zero(float16x8_t (&acc)[Split][Rows][2]) {
#pragma GCC unroll 4
  for (std::size_t s = 0; s < Split; ++s) {
#pragma GCC unroll 4
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[s][i][0] = vdupq_n_f16(0);
      acc[s][i][1] = vdupq_n_f16(0);
    }
  }
}

// f32 accumulators += the fp16 block sums (the sets summed in fp16 first).
template <std::size_t Split, std::size_t Rows>
__attribute__((always_inline)) inline void spill(float16x8_t (&acc)[Split][Rows][2],
                                                 float32x4_t (&out)[Rows][4]) {
#pragma GCC unroll 4
  for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 2
    for (std::size_t h = 0; h < 2; ++h) {
      float16x8_t v = acc[0][i][h];
      if constexpr (Split == 4) {
        v = vaddq_f16(vaddq_f16(acc[0][i][h], acc[1][i][h]), vaddq_f16(acc[2][i][h], acc[3][i][h]));
      } else if constexpr (Split == 2) {
        v = vaddq_f16(acc[0][i][h], acc[1][i][h]);
      }
      out[i][2 * h] = vaddq_f32(out[i][2 * h], vcvt_f32_f16(vget_low_f16(v)));
      out[i][2 * h + 1] = vaddq_f32(out[i][2 * h + 1], vcvt_high_f32_f16(v));
    }
  }
}

// GCC's scheduling before register allocation hoists the loads of the next steps and spills
// accumulators to the stack; the scheduling after allocation stays.
#if defined(__GNUC__) && !defined(__clang__)
#define LRK_F16_NO_PRESCHED __attribute__((optimize("no-schedule-insns")))
#else
#define LRK_F16_NO_PRESCHED
#endif

template <std::size_t Rows>
LRK_F16_NO_PRESCHED void gemm_ukernel(std::size_t nr, std::size_t kc, std::size_t taps,
                                      const float* const* a_taps, std::size_t lda,
                                      const void* w_bytes, const float* init, float* c,
                                      std::size_t ldc) {
  static_assert(Rows >= 1 && Rows <= kMr, "rows of the tile");
  const std::uint16_t* w_taps = static_cast<const std::uint16_t*>(w_bytes);
  constexpr std::size_t Split = Rows >= 4 ? 1 : (Rows == 1 ? 4 : 2);
  float32x4_t out[Rows][4];
  if (init != nullptr) {
#pragma GCC unroll 4
    for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 4
      for (std::size_t q = 0; q < 4; ++q) out[i][q] = vld1q_f32(init + 4 * q);
    }
  } else if (nr == kNr) {
#pragma GCC unroll 4
    for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 4
      for (std::size_t q = 0; q < 4; ++q) out[i][q] = vld1q_f32(c + i * ldc + 4 * q);
    }
  } else {
#pragma GCC unroll 4
    for (std::size_t i = 0; i < Rows; ++i) {
      float row[kNr] = {};
      for (std::size_t j = 0; j < nr; ++j) row[j] = c[i * ldc + j];
#pragma GCC unroll 4
      for (std::size_t q = 0; q < 4; ++q) out[i][q] = vld1q_f32(row + 4 * q);
    }
  }

  float16x8_t acc[Split][Rows][2];
  for (std::size_t tap = 0; tap < taps; ++tap) {
    const float* a = a_taps[tap];
    const std::uint16_t* w = w_taps + tap * kc * kNr;
    std::size_t k = 0;
    // Whole blocks: 4 steps of 8 k, then the spill (one loop body: what llvm-mca measures).
    for (; k + kSpill <= kc; k += kSpill) {
      zero(acc);
#pragma GCC unroll 4
      for (std::size_t kk = 0; kk < kSpill; kk += 8)
        step8(acc, a + k + kk, lda, w + (k + kk) * kNr);
      spill(acc, out);
    }
    // The rest of the tap: whole 8-k steps, then k % 8 single steps on a zero-padded A vector.
    if (k < kc) {
      zero(acc);
#pragma GCC unroll 1
      for (; k + 8 <= kc; k += 8) step8(acc, a + k, lda, w + k * kNr);
      const std::size_t rem = kc - k;
      if (rem != 0) {
        float16x8_t av[Rows];
#pragma GCC unroll 4
        for (std::size_t i = 0; i < Rows; ++i) {
          float buf[8] = {};
          for (std::size_t e = 0; e < rem; ++e) buf[e] = a[i * lda + k + e];
          av[i] = load_a8(buf);
        }
        const std::uint16_t* wk = w + k * kNr;
        switch (rem) {  // lanes rem-1 .. 0; the weights of lane l are at wk + l * kNr
          case 7:
            lane_step<6>(acc, wk, av);
            [[fallthrough]];
          case 6:
            lane_step<5>(acc, wk, av);
            [[fallthrough]];
          case 5:
            lane_step<4>(acc, wk, av);
            [[fallthrough]];
          case 4:
            lane_step<3>(acc, wk, av);
            [[fallthrough]];
          case 3:
            lane_step<2>(acc, wk, av);
            [[fallthrough]];
          case 2:
            lane_step<1>(acc, wk, av);
            [[fallthrough]];
          default:
            lane_step<0>(acc, wk, av);
        }
      }
      spill(acc, out);
    }
  }

  if (nr == kNr) {
#pragma GCC unroll 4
    for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 4
      for (std::size_t q = 0; q < 4; ++q) vst1q_f32(c + i * ldc + 4 * q, out[i][q]);
    }
  } else {
#pragma GCC unroll 4
    for (std::size_t i = 0; i < Rows; ++i) {
      float row[kNr];
#pragma GCC unroll 4
      for (std::size_t q = 0; q < 4; ++q) vst1q_f32(row + 4 * q, out[i][q]);
      for (std::size_t j = 0; j < nr; ++j) c[i * ldc + j] = row[j];
    }
  }
}

}  // namespace

extern const F32GemmUkernelFn f16_gemm_4x16__neonfp16arith[5] = {
    nullptr, gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>};

}  // namespace lrk
#endif  // __aarch64__
