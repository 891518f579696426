// Micro-kernel function types, one per (operation, data type): the only contract between the
// shared, intrinsic-free drivers and the per-ISA code in cpp/kernels/<op>/<tile>-<isa>.cc.
//
// Per-ISA translation units include this header (through microkernels.h) and <*intrin.h> only.
// They must not instantiate templates or inline functions shared with other translation units (the
// STL included): the linker keeps one copy of such code, and it could be the AVX-512-flagged one.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lrk {

// f32 GEMM: one register tile of C = A * W (+ bias), summed over `taps` (A, W) pairs:
//   c[i][j] = init[j] + sum_t sum_k a[t][i*lda + k] * w[(t*kc + k)*NR + j]   when init != nullptr
//   c[i][j] = c[i][j] + (the same sums)                                       when init == nullptr
// for i < rows (fixed by the table slot), j < nr <= NR. A plain GEMM passes taps = 1; an implicit-
// GEMM convolution passes one A pointer per kernel tap (XNNPACK's indirect GEMM), so the output
// tile stays in registers across taps. `w` is one packed weight panel (taps * kc rows of NR floats,
// zero-padded past the layer's last output column); `init` is the panel's packed bias (NR floats).
// A is read unpacked, row by row, so batch 1 needs no packing of x.
// `w` holds the config's weight type: float, or IEEE fp16 (uint16 bits) for the f16w configs
// (f32 activations and arithmetic on fp16-stored weights: half the bytes of a bandwidth-bound
// call).
using F32GemmUkernelFn = void (*)(std::size_t nr, std::size_t kc, std::size_t taps,
                                  const float* const* a, std::size_t lda, const void* w,
                                  const float* init, float* c, std::size_t ldc);

// qd8-f32-qc8w GEMM (int8): A quantized per row by the driver (int8, or uint8 = int8 + 128 when
// the config's input_offset is 128: x86's u8 x s8 dot products), W int8 with one scale per output
// column, packed with K in groups of 4 (the SDOT / VPDPBUSD layout). Raw int32 dot products out:
//   c[i*ldc + j] = sum_t sum_{g < kgroups} sum_{e < 4} a[t][i*lda + 4g + e] * w[((t*kgroups + g)*NR
//   + j)*4 + e]
// for i < rows (the table slot) and j < nr <= NR; written, not accumulated. A rows hold 4*kgroups
// bytes (the driver zero-pads them; padding meets zero weights). The driver dequantizes, adds the
// bias and clamps.
using QD8GemmUkernelFn = void (*)(std::size_t nr, std::size_t kgroups, std::size_t taps,
                                  const std::int8_t* const* a, std::size_t lda,
                                  const std::int8_t* w, std::int32_t* c, std::size_t ldc);

// The quantization of the int8 path's inputs and the dequantization of its sums (the driver's
// element-wise work, per ISA like the GEMM so it keeps pace with it). One quantization:
// x ~ scale * (q - zero), q in [-128, 127]; lo/hi: the range seen, widened to include 0;
// finite: no NaN or +-inf seen; zero_range: every q is 0 (all zeros, a range below the normal
// floats, or non-finite values). The arithmetic is lrkernels.reference.quantize_rows' exactly.
struct QD8RowQuant {
  float lo = 0.0f, hi = 0.0f;
  bool finite = true;
  float scale = 1.0f;
  std::int32_t zero = 0;
  bool zero_range = true;
};
// Widens r->lo, r->hi, r->finite by x[0..k).
using QD8RangeFn = void (*)(std::size_t k, const float* x, QD8RowQuant* r);
// q[i] = clamp(rint(x[i] * (1 / r.scale)) + r.zero, -128, 127) + offset for i < k (0 + offset
// everywhere when r.zero_range), q[k..kpad) = r.zero + offset.
using QD8QuantizeFn = void (*)(std::size_t k, std::size_t kpad, const float* x,
                               const QD8RowQuant* r, int offset, std::int8_t* q);
// y[i][j] = float(acc[i][j] - (r_i.zero + offset) * wsum[j]) * (r_i.scale * wscale[j]) [+ bias[j]]
// for i < rows (r_i = r[i * r_step]: 0 when every row shares one quantization), j < cols, each
// operation one float32 rounding; a row with !r_i.finite is NaN.
using QD8DequantizeFn = void (*)(std::size_t rows, std::size_t cols, const std::int32_t* acc,
                                 std::size_t ldacc, const QD8RowQuant* r, std::size_t r_step,
                                 int offset, const float* wscale, const std::int32_t* wsum,
                                 const float* bias, float* y, std::size_t ldy);

// f32 transpose: dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: the NCHW <-> NHWC row
// transposes of the convolutions, which a scalar loop makes as slow as a small GEMM.
using F32TransposeFn = void (*)(const float* src, std::size_t rows, std::size_t cols,
                                std::size_t lds, float* dst, std::size_t ldd);

// f32 depthwise taps: out[p * ldo + c] = sum_t weights[t * channels + c] * src[t][p * step + c],
// the kh x 1 and 1 x kw stages of CPConv2d, vectorized over channels.
// Winograd F(2x2, 3x3) transforms of a row of tiles (cpp/kernels/f32-winograd/winograd-generic.h).
// Input: tile t reads columns 2t..2t+3 of the 4 source rows (pixels of `channels` floats) and
// writes B^T d B point xi of channel c to v[xi * v_stride + t * ldv + c].
using F32WinogradInputFn = void (*)(std::size_t tiles, std::size_t channels,
                                    const float* const* rows, float* v, std::size_t v_stride,
                                    std::size_t ldv);
// Output: A^T M A + bias (bias may be nullptr) into output columns 2t, 2t+1 below `width` of out0
// and out1 (nullptr: a row past the image), pixel stride ldo; spill: 3 x channels floats for the
// outputs past the image.
using F32WinogradOutputFn = void (*)(std::size_t tiles, std::size_t channels, const float* m,
                                     std::size_t m_stride, std::size_t ldm, const float* bias,
                                     std::size_t width, float* out0, float* out1, std::size_t ldo,
                                     float* spill);

using F32DwconvFn = void (*)(std::size_t pixels, std::size_t channels, std::size_t taps,
                             const float* const* src, std::size_t step, const float* weights,
                             float* out, std::size_t ldo);

// f32 output clamp (the "minmax" epilogue): out[i * ldo + j] = min(max(in[i * ldi + j], lo), hi)
// for i < rows, j < cols, NaN passed through (in == out allowed). The drivers call it on each
// finished output tile of a layer's last stage, while the tile is still in L1.
using F32ClampFn = void (*)(std::size_t rows, std::size_t cols, const float* in, std::size_t ldi,
                            float* out, std::size_t ldo, float lo, float hi);

// f32 recurrent cells: the gate nonlinearities and state update of one time step for `batch` rows,
// from gx (W_ih x + b_ih) and gh (W_hh h + b_hh), gates stacked as torch stacks them.
// LSTM (i, f, g, o): c (row stride ldc) is updated in place, h receives the new hidden state.
using F32LstmCellFn = void (*)(std::size_t batch, std::size_t hidden, const float* gx,
                               std::size_t ldgx, const float* gh, std::size_t ldgh, float* c,
                               std::size_t ldc, float* h, std::size_t ldh);
// GRU (r, z, n): h = (1 - z) n + z h_prev; h must not overlap h_prev.
using F32GruCellFn = void (*)(std::size_t batch, std::size_t hidden, const float* gx,
                              std::size_t ldgx, const float* gh, std::size_t ldgh,
                              const float* h_prev, std::size_t ldhp, float* h, std::size_t ldh);

// FMA peak probe: `iterations` rounds of independent register-only FMAs; timing it gives this
// core's FMA peak, the yardstick of the benchmarks.
using FmaProbeFn = void (*)(std::size_t iterations, float* sink);

// Packs W (n x k, row-major float) and an optional float bias (n) into ceil(n / nr) panels of
// [nr float bias][k rows of nr weight elements of the config's type], zero-padded past column n,
// at `dst`.
using PackGemmWeightsFn = void (*)(const void* w, const void* bias, std::size_t n, std::size_t k,
                                   std::size_t nr, void* dst);

// The most rows any GEMM micro-kernel tile has (the per-row tables have kMaxMr + 1 slots).
constexpr std::size_t kMaxMr = 16;

}  // namespace lrk
