// int8 GEMM micro-kernels for ARMv8.2 dot products (Cortex-A76/A78, Neoverse N1): 8 rows x 8
// columns, K in groups of 4, SDOT by lane. Built with the neondot flags; the config rows require
// kCpuNeonDot (HWCAP asimddp).
//
// The packed group of 4 columns x 4 k (16 bytes) is exactly SDOT's second operand, so the kernel
// mirrors the f32 8x8 kernel: 16 int32 accumulators + 8 row vectors of A (4 groups each, one
// 16-byte load per row) + 2 weight vectors = 26 registers. Per 4 groups: 8 A loads + 8 weight loads
// for 64 SDOTs (1024 MACs): the two SDOT pipes of the A76/N1 (2 x 16 MACs per cycle) bound it, and
// 16 chains cover SDOT's 2-3 cycle latency. Rows 1..3 split the groups over 2-4 accumulator sets to
// keep enough independent chains (GEMV).
#if defined(__aarch64__)
#include <arm_neon.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

constexpr std::size_t kNr = 8;

// One k group of a tile using lane `Lane` (group g + Lane) of each row's 4-group A vector.
template <int Lane, std::size_t Split, std::size_t Rows>
__attribute__((always_inline)) inline void lane_step(int32x4_t (&acc)[Split][Rows][2],
                                                     const std::int8_t* wg,
                                                     const int8x16_t (&av)[Rows]) {
  const int8x16_t w0 = vld1q_s8(wg);
  const int8x16_t w1 = vld1q_s8(wg + 16);
  constexpr std::size_t s = static_cast<std::size_t>(Lane) % Split;
#pragma GCC unroll 8
  for (std::size_t i = 0; i < Rows; ++i) {
    acc[s][i][0] = vdotq_laneq_s32(acc[s][i][0], w0, av[i], Lane);
    acc[s][i][1] = vdotq_laneq_s32(acc[s][i][1], w1, av[i], Lane);
  }
}

// GCC's scheduler before register allocation makes the accumulators rotate through extra registers
// (10 MOVs per 4 groups of the 8x8 tile: 37 instead of 32 cycles on llvm-mca's Neoverse N1
// model); the scheduling after allocation stays.
#if defined(__GNUC__) && !defined(__clang__)
#define LRK_QD8_NEONDOT_NO_PRESCHED __attribute__((optimize("no-schedule-insns")))
#else
#define LRK_QD8_NEONDOT_NO_PRESCHED
#endif

template <std::size_t Rows>
LRK_QD8_NEONDOT_NO_PRESCHED void gemm_ukernel(std::size_t nr, std::size_t kgroups, std::size_t taps,
                                              const std::int8_t* const* a_taps, std::size_t lda,
                                              const std::int8_t* w, std::int32_t* c,
                                              std::size_t ldc) {
  constexpr std::size_t Split = Rows >= 4 ? 1 : (Rows == 1 ? 4 : 2);
  int32x4_t acc[Split][Rows][2];
#pragma GCC unroll 4
  for (std::size_t s = 0; s < Split; ++s) {
#pragma GCC unroll 8
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[s][i][0] = vdupq_n_s32(0);
      acc[s][i][1] = vdupq_n_s32(0);
    }
  }

  for (std::size_t tap = 0; tap < taps; ++tap) {
    const std::int8_t* a = a_taps[tap];
    std::size_t g = 0;
    for (; g + 4 <= kgroups; g += 4, w += 4 * 4 * kNr) {
      int8x16_t av[Rows];
#pragma GCC unroll 8
      for (std::size_t i = 0; i < Rows; ++i) av[i] = vld1q_s8(a + i * lda + 4 * g);
      lane_step<0>(acc, w, av);
      lane_step<1>(acc, w + 4 * kNr, av);
      lane_step<2>(acc, w + 8 * kNr, av);
      lane_step<3>(acc, w + 12 * kNr, av);
    }
    // Last 1-3 groups one at a time: 4 A bytes each, no reading past the row.
    for (; g < kgroups; ++g, w += 4 * kNr) {
      const int8x16_t w0 = vld1q_s8(w);
      const int8x16_t w1 = vld1q_s8(w + 16);
#pragma GCC unroll 8
      for (std::size_t i = 0; i < Rows; ++i) {
        std::int32_t bits;
        __builtin_memcpy(&bits, a + i * lda + 4 * g, sizeof(bits));
        const int8x16_t ai = vreinterpretq_s8_s32(vdupq_n_s32(bits));
        acc[0][i][0] = vdotq_s32(acc[0][i][0], w0, ai);
        acc[0][i][1] = vdotq_s32(acc[0][i][1], w1, ai);
      }
    }
  }

#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 8
    for (std::size_t i = 0; i < Rows; ++i) {
      acc[0][i][0] = vaddq_s32(acc[0][i][0], acc[s][i][0]);
      acc[0][i][1] = vaddq_s32(acc[0][i][1], acc[s][i][1]);
    }
  }
#pragma GCC unroll 8
  for (std::size_t i = 0; i < Rows; ++i) {
    if (nr == kNr) {
      vst1q_s32(c + i * ldc, acc[0][i][0]);
      vst1q_s32(c + i * ldc + 4, acc[0][i][1]);
    } else {
      std::int32_t row[kNr];
      vst1q_s32(row, acc[0][i][0]);
      vst1q_s32(row + 4, acc[0][i][1]);
      for (std::size_t j = 0; j < nr; ++j) c[i * ldc + j] = row[j];
    }
  }
}

}  // namespace

extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_8x8c4__neondot[9] = {
    nullptr,         gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>,
    gemm_ukernel<5>, gemm_ukernel<6>, gemm_ukernel<7>, gemm_ukernel<8>};

}  // namespace lrk
#endif  // __aarch64__
