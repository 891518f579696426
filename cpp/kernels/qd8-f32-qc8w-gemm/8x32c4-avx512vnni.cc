// AVX512-VNNI int8 GEMM micro-kernels: 8 rows x 32 columns (two zmm vectors), K in groups of 4.
//
// vpdpbusd multiplies unsigned bytes by signed bytes, so A arrives as q + 128 (input_offset 128);
// the driver removes the offset with the weights' column sums. Each zmm of the panel holds 16
// columns x 4 k-bytes; each row broadcasts its 4 A bytes of the group (vpbroadcastd from memory,
// a load-port op: the broadcast operand of vpdpbusd is the signed one, the weights).
//
// Why 8x32: Zen 4 retires 2 zmm vpdpbusd per cycle (latency 4) and 2 loads per cycle. Per k group
// this tile issues 2 weight loads + 8 broadcasts for 16 vpdpbusd (8 cycles), so the dot-product
// ports, not the load ports, bound it; 16 independent accumulators cover the 8 in flight. A 12x16
// tile needs 13 loads per 12 vpdpbusd and measured 15% slower (405 vs 478 G MAC/s at K = 1280).
// Rows 1..3 split K over 2-4 accumulator sets to keep at least 8 chains in flight (GEMV), and the
// panel is prefetched 8 KiB ahead as in the f32 kernels (batch 1 streams it from L2/L3/DRAM).
#include <immintrin.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

constexpr std::size_t kVecs = 2;
constexpr std::size_t kNr = 16 * kVecs;
constexpr std::size_t kGroupBytes = kNr * 4;  // one k group of the panel: 128 bytes
constexpr std::size_t kPrefetchBytes = 8192;

inline __mmask16 first_lanes(std::size_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// The 4 bytes of one row's k group, broadcast to every 32-bit lane (A rows are byte aligned).
inline __m512i broadcast_group(const std::int8_t* p) {
  std::int32_t v;
  __builtin_memcpy(&v, p, sizeof(v));
  return _mm512_set1_epi32(v);
}

// vpdpbusd through inline asm: GCC 12 allocates the intrinsic's tied accumulator badly and copies
// every accumulator through a second register (and the stack) each k group, which cost 33% of the
// throughput; the "+v" constraint keeps each accumulator in one register. The weight operand may
// be a memory operand (the 1-row kernels fold their panel loads into it).
inline __m512i dpbusd(__m512i acc, __m512i a, __m512i w) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "vm"(w));
  return acc;
}

template <std::size_t Rows>
void gemm_ukernel(std::size_t nr, std::size_t kgroups, std::size_t taps,
                  const std::int8_t* const* a_taps, std::size_t lda, const std::int8_t* w,
                  std::int32_t* c, std::size_t ldc) {
  constexpr std::size_t Chains = Rows * kVecs;
  constexpr std::size_t Split = Chains >= 8 ? 1 : (Chains >= 4 ? 2 : 4);
  __m512i acc[Split][Rows][kVecs];
#pragma GCC unroll 4
  for (std::size_t s = 0; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 2
      for (std::size_t v = 0; v < kVecs; ++v) acc[s][i][v] = _mm512_setzero_si512();
    }
  }

  // Taps (kernel positions of an implicit-GEMM convolution, or 1) accumulate into the same
  // registers; tap t's weights follow tap t-1's, so `w` simply runs on.
  for (std::size_t tap = 0; tap < taps; ++tap) {
    const std::int8_t* a = a_taps[tap];
    std::size_t g = 0;
    for (; g + Split <= kgroups; g += Split, w += Split * kGroupBytes) {
#pragma GCC unroll 4
      for (std::size_t s = 0; s < Split; ++s) {
        const std::int8_t* wg = w + s * kGroupBytes;
        _mm_prefetch(reinterpret_cast<const char*>(wg + kPrefetchBytes), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(wg + kPrefetchBytes + 64), _MM_HINT_T0);
        __m512i wv[kVecs];
#pragma GCC unroll 2
        for (std::size_t v = 0; v < kVecs; ++v) wv[v] = _mm512_loadu_si512(wg + 64 * v);
#pragma GCC unroll 16
        for (std::size_t i = 0; i < Rows; ++i) {
          const __m512i ai = broadcast_group(a + i * lda + 4 * (g + s));
#pragma GCC unroll 2
          for (std::size_t v = 0; v < kVecs; ++v) acc[s][i][v] = dpbusd(acc[s][i][v], ai, wv[v]);
        }
      }
    }
    for (; g < kgroups; ++g, w += kGroupBytes) {
      __m512i wv[kVecs];
#pragma GCC unroll 2
      for (std::size_t v = 0; v < kVecs; ++v) wv[v] = _mm512_loadu_si512(w + 64 * v);
#pragma GCC unroll 16
      for (std::size_t i = 0; i < Rows; ++i) {
        const __m512i ai = broadcast_group(a + i * lda + 4 * g);
#pragma GCC unroll 2
        for (std::size_t v = 0; v < kVecs; ++v) acc[0][i][v] = dpbusd(acc[0][i][v], ai, wv[v]);
      }
    }
  }

#pragma GCC unroll 4
  for (std::size_t s = 1; s < Split; ++s) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 2
      for (std::size_t v = 0; v < kVecs; ++v)
        acc[0][i][v] = _mm512_add_epi32(acc[0][i][v], acc[s][i][v]);
    }
  }
  __mmask16 mask[kVecs];
#pragma GCC unroll 2
  for (std::size_t v = 0; v < kVecs; ++v) mask[v] = first_lanes(nr > 16 * v ? nr - 16 * v : 0);
#pragma GCC unroll 16
  for (std::size_t i = 0; i < Rows; ++i) {
#pragma GCC unroll 2
    for (std::size_t v = 0; v < kVecs; ++v)
      _mm512_mask_storeu_epi32(c + i * ldc + 16 * v, mask[v], acc[0][i][v]);
  }
}

}  // namespace

extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_8x32c4__avx512vnni[9] = {
    nullptr,         gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>,
    gemm_ukernel<5>, gemm_ukernel<6>, gemm_ukernel<7>, gemm_ukernel<8>};

}  // namespace lrk
