// AVX2 int8 GEMM micro-kernels without VNNI: 4 rows x 8 columns, K in groups of 4.
//
// Exact without dot-product instructions: vpmaddubsw would saturate (two u8 x s8 products reach
// 2 * 255 * 127 > 32767), so A (int8, input_offset 0) and the weights are sign-extended to 16 bits
// and multiplied with vpmaddwd, whose pair sums go straight to int32 (|a*w + a*w| <= 32512).
// One group of the panel (8 columns x 4 k-bytes) extends into two ymm of 16 int16 (columns 0-3,
// 4-7); each row's 4 A bytes, extended and repeated in every 64-bit lane, meet them in two
// vpmaddwd. Each int32 lane then holds half a column's sum (k 0-1 or 2-3), so a row has two
// accumulators, folded once at the end by vphaddd.
//
// Why 4x8: 8 accumulators + 2 weight vectors + the A vector and a product leave 4 of the 16
// registers free (6 rows fit only with none free, and GCC spills). Per group: 2 + 4 extensions
// (shuffle port), 8 vpmaddwd and 8 vpaddd for 128 MACs: the multiply ports bound it. The chains
// are vpaddd (latency 1), so the 1..3-row kernels need no K split. The panel is prefetched 8 KiB
// ahead as in the f32 kernels.
#include <immintrin.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

constexpr std::size_t kNr = 8;
constexpr std::size_t kGroupBytes = kNr * 4;  // one k group of the panel: 32 bytes
constexpr std::size_t kPrefetchBytes = 8192;

// Loading 8 ints at kMaskTable + 8 - n gives a mask with the first n lanes set.
alignas(64) constexpr int kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

inline __m256i first_lanes(std::size_t n) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - (n > 8 ? 8 : n)));
}

// One row's 4 A bytes of a group as int16, repeated in every 64-bit lane. vbroadcastss from memory
// is a pure load (GCC turns an integer broadcast into vmovd + vpshufd: one more vector op).
// (The builtin reads through the pointer itself: no float lvalue, no alignment needed.)
inline __m256i a_group(const std::int8_t* p) {
  return _mm256_cvtepi8_epi16(
      _mm_castps_si128(_mm_broadcast_ss(reinterpret_cast<const float*>(p))));
}

// acc + vpmaddwd(a, w), in inline asm so that GCC keeps one product register per row instead of
// pairing products of two groups first (which spilled accumulators).
inline __m256i madd_add(__m256i acc, __m256i a, __m256i w) {
  __m256i p;
  __asm__("vpmaddwd %3, %2, %1\n\tvpaddd %1, %0, %0" : "+x"(acc), "=&x"(p) : "x"(a), "xm"(w));
  return acc;
}

// 4 columns x 4 k of the panel (16 bytes) as int16.
inline __m256i w_half(const std::int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

template <std::size_t Rows>
inline void step(__m256i (&acc)[Rows][2], const std::int8_t* a, std::size_t lda,
                 const std::int8_t* wg) {
  const __m256i w0 = w_half(wg);
  const __m256i w1 = w_half(wg + 16);
#pragma GCC unroll 8
  for (std::size_t i = 0; i < Rows; ++i) {
    const __m256i ai = a_group(a + i * lda);
    acc[i][0] = madd_add(acc[i][0], ai, w0);
    acc[i][1] = madd_add(acc[i][1], ai, w1);
  }
}

template <std::size_t Rows>
void gemm_ukernel(std::size_t nr, std::size_t kgroups, std::size_t taps,
                  const std::int8_t* const* a_taps, std::size_t lda, const std::int8_t* w,
                  std::int32_t* c, std::size_t ldc) {
  __m256i acc[Rows][2];
#pragma GCC unroll 8
  for (std::size_t i = 0; i < Rows; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();

  // Taps accumulate into the same registers; tap t's weights follow tap t-1's.
  for (std::size_t tap = 0; tap < taps; ++tap) {
    const std::int8_t* a = a_taps[tap];
    std::size_t g = 0;
    // Two groups (one 64-byte line of the panel) per step: one prefetch each.
    for (; g + 2 <= kgroups; g += 2, w += 2 * kGroupBytes) {
      _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes), _MM_HINT_T0);
      step(acc, a + 4 * g, lda, w);
      step(acc, a + 4 * g + 4, lda, w + kGroupBytes);
    }
    if (g < kgroups) {
      step(acc, a + 4 * g, lda, w);
      w += kGroupBytes;
    }
  }

  // Fold the half sums: hadd gives columns (0 1 4 5 | 2 3 6 7), vpermq puts them in order.
  const __m256i mask = first_lanes(nr);
#pragma GCC unroll 8
  for (std::size_t i = 0; i < Rows; ++i) {
    const __m256i sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[i][0], acc[i][1]), 0xD8);
    _mm256_maskstore_epi32(reinterpret_cast<int*>(c + i * ldc), mask, sums);
  }
}

}  // namespace

extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_4x8c4__avx2[5] = {
    nullptr, gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>};

}  // namespace lrk
