// Portable f16w GEMM micro-kernels: 4 rows x 8 columns of f32 arithmetic on fp16-stored weights,
// converted in software as they are read (the fallback; SIMD ISAs convert in hardware).
#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

constexpr std::size_t kNr = 8;

// fp16 bits -> float. Kept local (a per-ISA file must not share inline code with other files).
float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu, x;
  if (exponent == 0x1Fu) {
    x = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    x = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    x = sign;
  } else {
    exponent = 113;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      --exponent;
    }
    x = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float f;
  __builtin_memcpy(&f, &x, sizeof(f));
  return f;
}

template <std::size_t Rows>
void gemm_ukernel(std::size_t nr, std::size_t kc, std::size_t taps, const float* const* a_taps,
                  std::size_t lda, const void* w_bytes, const float* init, float* c,
                  std::size_t ldc) {
  const std::uint16_t* w_taps = static_cast<const std::uint16_t*>(w_bytes);
  float acc[Rows][kNr];
  for (std::size_t i = 0; i < Rows; ++i) {
    for (std::size_t j = 0; j < kNr; ++j) {
      acc[i][j] = init != nullptr ? init[j] : (j < nr ? c[i * ldc + j] : 0.0f);
    }
  }
  for (std::size_t tap = 0; tap < taps; ++tap) {
    const float* a = a_taps[tap];
    const std::uint16_t* w = w_taps + tap * kc * kNr;
    for (std::size_t k = 0; k < kc; ++k) {
      float wk[kNr];
      for (std::size_t j = 0; j < kNr; ++j) wk[j] = half_to_float(w[k * kNr + j]);
      for (std::size_t i = 0; i < Rows; ++i) {
        const float ai = a[i * lda + k];
        for (std::size_t j = 0; j < kNr; ++j) acc[i][j] += ai * wk[j];
      }
    }
  }
  for (std::size_t i = 0; i < Rows; ++i) {
    for (std::size_t j = 0; j < nr; ++j) c[i * ldc + j] = acc[i][j];
  }
}

}  // namespace

extern const F32GemmUkernelFn f16w_gemm_4x8__scalar[5] = {nullptr, gemm_ukernel<1>, gemm_ukernel<2>,
                                                          gemm_ukernel<3>, gemm_ukernel<4>};

}  // namespace lrk
