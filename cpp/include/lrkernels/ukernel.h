// The micro-kernel interface: the only contract between the shared driver and the per-ISA code.
//
// Per-ISA translation units include this header and <*intrin.h> only. They must not instantiate
// templates or inline functions shared with other translation units (the STL included): the linker
// keeps one copy of such code, and it could be the copy compiled with AVX-512 flags.
#pragma once

#include <cstddef>

namespace lrk {

// One register tile of C = A * W (+ bias), summed over `taps` (A, W) pairs:
//   c[i][j] = init[j] + sum_t sum_k a[t][i*lda + k] * w[(t*kc + k)*NR + j]   when init != nullptr
//   c[i][j] = c[i][j] + (the same sums)                                       when init == nullptr
// for i < rows (fixed by the table slot), j < nr <= NR. A plain GEMM passes taps = 1; an implicit-
// GEMM convolution passes one A pointer per kernel tap (XNNPACK's indirect GEMM), so the output
// tile stays in registers across taps. `w` is one packed weight panel (taps * kc rows of NR floats,
// zero-padded past the layer's last output column); `init` is the panel's packed bias (NR floats).
// A is read unpacked, row by row, so batch 1 needs no packing of x.
using GemmUkernelFn = void (*)(std::size_t nr, std::size_t kc, std::size_t taps,
                               const float* const* a, std::size_t lda, const float* w,
                               const float* init, float* c, std::size_t ldc);

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: the NCHW <-> NHWC row transposes of
// the convolutions, which a scalar loop makes as slow as a small GEMM.
using TransposeFn = void (*)(const float* src, std::size_t rows, std::size_t cols, std::size_t lds,
                             float* dst, std::size_t ldd);

// out[p * ldo + c] = sum_t weights[t * channels + c] * src[t][p * step + c]: the kh x 1 and 1 x kw
// depthwise stages of CPConv2d, vectorized over channels.
using DepthwiseFn = void (*)(std::size_t pixels, std::size_t channels, std::size_t taps,
                             const float* const* src, std::size_t step, const float* weights,
                             float* out, std::size_t ldo);

constexpr std::size_t kMaxMr = 16;

struct GemmKernels {
  int isa;           // lrk::Isa value
  const char* name;  // e.g. "f32-gemm-8x32-avx512"
  std::size_t mr;    // rows of the full tile
  std::size_t nr;    // columns of the full tile = packed panel width
  std::size_t kc;    // K block: a kc x nr weight panel fits in about half of L1
  // ukernel[r] computes an r x nr tile, for r in 1..mr (slot 0 unused). Fewer rows than mr get their
  // own instantiation instead of wasted FMAs on padding rows.
  GemmUkernelFn ukernel[kMaxMr + 1];
  // Peak probe: `iterations` rounds of independent register-only FMAs, probe_flops_per_iteration
  // flops each; timing it gives this core's FMA peak, the yardstick of the benchmarks. May be null.
  void (*fma_probe)(std::size_t iterations, float* sink);
  std::size_t probe_flops_per_iteration;
  // Optional variant with a narrower panel for operands with at most narrow->nr output columns
  // (e.g. a rank-16 stage on AVX-512, which would waste half of each 32-wide panel). May be null.
  const GemmKernels* narrow;
  TransposeFn transpose;
  DepthwiseFn depthwise;
};

// Defined in cpp/kernels/<isa>/; only those compiled into this build exist (see dispatch.cc).
const GemmKernels* gemm_kernels_scalar();
const GemmKernels* gemm_kernels_neon();
const GemmKernels* gemm_kernels_avx2();
const GemmKernels* gemm_kernels_avx512();

}  // namespace lrk
