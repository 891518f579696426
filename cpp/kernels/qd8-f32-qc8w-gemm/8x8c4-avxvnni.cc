// AVX-VNNI int8 GEMM micro-kernels: 8 rows x 8 columns (one ymm), K in groups of 4.
//
// The VEX-encoded vpdpbusd (Alder Lake and later, Zen 5; Zen 4 has it beside AVX512-VNNI):
// unsigned A bytes (input_offset 128) times signed weights. One ymm of the panel holds 8 columns x
// 4 k-bytes.
//
// Why 8x8 and A blocks of 4 groups: a 4-byte broadcast load per row and group (as the AVX-512
// kernel does) reached only 133 G MAC/s on Zen 4 (9 loads per 8 vpdpbusd; 12x8 and 6x16 were no
// better). Here rows 0..5 load 16 A bytes once per 4 groups (vbroadcasti128) and vpshufd splits
// out each group; rows 6..7 still broadcast from memory, because 8 accumulators + 8 A blocks +
// the weights + a shuffle exceed the 16 registers and GCC then spilled an accumulator (a store-
// forwarding round trip in its chain: 157 G MAC/s). As written: 8 accumulators + 6 blocks + the
// weight vector + a shuffle = 16 registers, 18 loads per 32 vpdpbusd, 202 G MAC/s (the ymm
// vpdpbusd peak is ~2 per cycle = 64 MAC/cycle). 8 chains cover vpdpbusd's latency (4 cycles).
// Rows 1..4 split K over 8, 4, 2, 2 accumulator sets, so that every tile keeps 5-8 chains in
// flight (GEMV: 1 row, 8 chains), and the panel is prefetched 8 KiB ahead as in the f32 kernels.
#include <immintrin.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

constexpr std::size_t kNr = 8;
constexpr std::size_t kGroupBytes = kNr * 4;  // one k group of the panel: 32 bytes
constexpr std::size_t kPrefetchBytes = 8192;
// Rows whose A blocks stay in registers; rows past it broadcast each group from memory.
constexpr std::size_t kBlockRows = 6;

// Loading 8 ints at kMaskTable + 8 - n gives a mask with the first n lanes set.
alignas(64) constexpr int kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

inline __m256i first_lanes(std::size_t n) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - (n > 8 ? 8 : n)));
}

// The 4 bytes of one row's k group, broadcast to every 32-bit lane (A rows are byte aligned).
inline __m256i broadcast_group(const std::int8_t* p) {
  std::int32_t v;
  __builtin_memcpy(&v, p, sizeof(v));
  return _mm256_set1_epi32(v);
}

// 16 bytes of A (4 k groups) in both 128-bit lanes.
inline __m256i load_block(const std::int8_t* p) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Group s (0..3, a constant once unrolled) of a block broadcast to every 32-bit lane.
inline __m256i group_of(__m256i block, std::size_t s) {
  switch (s) {
    case 0:
      return _mm256_shuffle_epi32(block, 0x00);
    case 1:
      return _mm256_shuffle_epi32(block, 0x55);
    case 2:
      return _mm256_shuffle_epi32(block, 0xAA);
    default:
      return _mm256_shuffle_epi32(block, 0xFF);
  }
}

// vpdpbusd through inline asm: GCC 12 copies the intrinsic's tied accumulator through spare
// registers every k group (the same defect cost the AVX-512 kernel a third of its throughput).
inline __m256i dpbusd(__m256i acc, __m256i a, __m256i w) {
  __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "xm"(w));
  return acc;
}

template <std::size_t Rows>
void gemm_ukernel(std::size_t nr, std::size_t kgroups, std::size_t taps,
                  const std::int8_t* const* a_taps, std::size_t lda, const std::int8_t* w,
                  std::int32_t* c, std::size_t ldc) {
  constexpr std::size_t Split = Rows >= 5 ? 1 : (Rows >= 3 ? 2 : (Rows == 2 ? 4 : 8));
  constexpr std::size_t Block = Split > 4 ? Split : 4;  // k groups per step
  __m256i acc[Split][Rows];
#pragma GCC unroll 8
  for (std::size_t s = 0; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) acc[s][i] = _mm256_setzero_si256();
  }

  // Taps accumulate into the same registers; tap t's weights follow tap t-1's.
  for (std::size_t tap = 0; tap < taps; ++tap) {
    const std::int8_t* a = a_taps[tap];
    std::size_t g = 0;
    for (; g + Block <= kgroups; g += Block, w += Block * kGroupBytes) {
#pragma GCC unroll 8
      for (std::size_t l = 0; l < Block * kGroupBytes / 64; ++l)
        _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes + 64 * l), _MM_HINT_T0);
      constexpr std::size_t BlockRows = Rows < kBlockRows ? Rows : kBlockRows;
      __m256i block[BlockRows][Block / 4];
#pragma GCC unroll 16
      for (std::size_t i = 0; i < BlockRows; ++i) {
#pragma GCC unroll 2
        for (std::size_t q = 0; q < Block / 4; ++q)
          block[i][q] = load_block(a + i * lda + 4 * (g + 4 * q));
      }
#pragma GCC unroll 8
      for (std::size_t s = 0; s < Block; ++s) {
        const __m256i wv =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + s * kGroupBytes));
#pragma GCC unroll 16
        for (std::size_t i = 0; i < Rows; ++i) {
          // (The clamped index keeps the untaken branch in bounds before the loop is unrolled.)
          const __m256i ai = i < BlockRows ? group_of(block[i < BlockRows ? i : 0][s / 4], s % 4)
                                           : broadcast_group(a + i * lda + 4 * (g + s));
          acc[s % Split][i] = dpbusd(acc[s % Split][i], ai, wv);
        }
      }
    }
    for (; g < kgroups; ++g, w += kGroupBytes) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
#pragma GCC unroll 16
      for (std::size_t i = 0; i < Rows; ++i)
        acc[0][i] = dpbusd(acc[0][i], broadcast_group(a + i * lda + 4 * g), wv);
    }
  }

#pragma GCC unroll 8
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) acc[0][i] = _mm256_add_epi32(acc[0][i], acc[s][i]);
  }
  const __m256i mask = first_lanes(nr);
#pragma GCC unroll 16
  for (std::size_t i = 0; i < Rows; ++i)
    _mm256_maskstore_epi32(reinterpret_cast<int*>(c + i * ldc), mask, acc[0][i]);
}

}  // namespace

extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_8x8c4__avxvnni[9] = {
    nullptr,         gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>,
    gemm_ukernel<5>, gemm_ukernel<6>, gemm_ukernel<7>, gemm_ukernel<8>};

}  // namespace lrk
