// Portable C++ GEMM micro-kernels: 4 rows x 8 columns.
//
// The fallback on every CPU and the reference the SIMD kernels are compared with in spirit (the
// tests use numpy). 4x8 = 32 accumulators: enough independent sums to hide FP latency on an
// in-order core, few enough that the compiler keeps them in registers on 16-register ISAs
// (it may vectorize this with the baseline SSE2 / VFP it is allowed).
#include "lrkernels/ukernel.h"

namespace lrk {
namespace scalar {
namespace {

#include "../depthwise_generic.h"  // this ISA's own copy, built with this file's flags

constexpr std::size_t kMr = 4;
constexpr std::size_t kNr = 8;

template <std::size_t Rows>
void gemm_ukernel(std::size_t nr, std::size_t kc, std::size_t taps, const float* const* a_taps,
                  std::size_t lda, const float* w_taps, const float* init, float* c,
                  std::size_t ldc) {
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

// 8 x 8 tiles so both sides are touched a cache line at a time.
void transpose(const float* src, std::size_t rows, std::size_t cols, std::size_t lds, float* dst,
               std::size_t ldd) {
  for (std::size_t i0 = 0; i0 < rows; i0 += 8) {
    const std::size_t in = rows - i0 < 8 ? rows - i0 : 8;
    for (std::size_t j0 = 0; j0 < cols; j0 += 8) {
      const std::size_t jn = cols - j0 < 8 ? cols - j0 : 8;
      for (std::size_t i = 0; i < in; ++i)
        for (std::size_t j = 0; j < jn; ++j) dst[(j0 + j) * ldd + i0 + i] = src[(i0 + i) * lds + j0 + j];
    }
  }
}

const GemmKernels kKernels = {
    0,  // Isa::scalar
    "f32-gemm-4x8-scalar",
    kMr,
    kNr,
    512,  // kc: a 512 x 8 panel is 16 KiB, half of the smallest L1D we target
    {nullptr, gemm_ukernel<1>, gemm_ukernel<2>, gemm_ukernel<3>, gemm_ukernel<4>},
    nullptr,  // no meaningful peak: the compiler decides how this code is vectorized
    0,
    nullptr,  // no narrow variant
    transpose,
    depthwise_taps,
};

}  // namespace
}  // namespace scalar

const GemmKernels* gemm_kernels_scalar() { return &scalar::kKernels; }

}  // namespace lrk
