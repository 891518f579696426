// Portable C++ GEMM micro-kernels: 4 rows x 8 columns.
//
// The fallback on every CPU and the reference the SIMD kernels are compared with in spirit (the
// tests use numpy). 4x8 = 32 accumulators: enough independent sums to hide FP latency on an
// in-order core, few enough that the compiler keeps them in registers on 16-register ISAs
// (it may vectorize this with the baseline SSE2 / VFP it is allowed).
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

constexpr std::size_t kNr = 8;

template <std::size_t Rows>
void gemm_ukernel(std::size_t nr, std::size_t kc, std::size_t taps, const float* const* a_taps,
                  std::size_t lda, const void* w_bytes, const float* init, float* c,
                  std::size_t ldc) {
  const float* w_taps = static_cast<const float*>(w_bytes);
  float acc[Rows][kNr];
  for (std::size_t i = 0; i < Rows; ++i) {
    for (std::size_t j = 0; j < kNr; ++j) {
      acc[i][j] = init != nullptr ? init[j] : (j < nr ? c[i * ldc + j] : 0.0f);
    }
  }
  for (std::size_t tap = 0; tap < taps; ++tap) {
    const float* a = a_taps[tap];
    const float* w = w_taps + tap * kc * kNr;
    for (std::size_t k = 0; k < kc; ++k) {
      const float* wk = w + k * kNr;
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

extern const F32GemmUkernelFn f32_gemm_4x8__scalar[5] = {nullptr, gemm_ukernel<1>, gemm_ukernel<2>,
                                                         gemm_ukernel<3>, gemm_ukernel<4>};

}  // namespace lrk
