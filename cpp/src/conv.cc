#include "lrkernels/conv.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "lrkernels/dispatch.h"
#include "lrkernels/fp_mode.h"
#include "lrkernels/gemm.h"
#include "lrkernels/threadpool.h"

namespace lrk {
namespace {

// Tap pointers of one pixel tile live on the stack of the thread computing it.
constexpr std::size_t kMaxTaps = 1024;

// Geometry values above this are rejected, so that sizes like h + 2 * padding cannot overflow.
constexpr std::size_t kMaxGeometry = std::size_t(1) << 24;

void check_geometry(const ConvGeometry& g) {
  if (g.kh == 0 || g.kw == 0) throw std::invalid_argument("convolution kernel size must be >= 1");
  for (std::size_t v : {g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw}) {
    if (v > kMaxGeometry) {
      throw std::invalid_argument("convolution kernel size, stride, padding and dilation must be <= " +
                                  std::to_string(kMaxGeometry));
    }
  }
  if (g.kh * g.kw > kMaxTaps) {
    throw std::invalid_argument("convolution kernel has more than " + std::to_string(kMaxTaps) +
                                " taps");
  }
  if (g.sh == 0 || g.sw == 0) throw std::invalid_argument("convolution stride must be >= 1");
  if (g.dh == 0 || g.dw == 0) throw std::invalid_argument("convolution dilation must be >= 1");
}

std::size_t out_size(std::size_t in, std::size_t pad, std::size_t dil, std::size_t k,
                     std::size_t stride) {
  const std::size_t span = dil * (k - 1) + 1;
  if (in + 2 * pad < span) return 0;
  return (in + 2 * pad - span) / stride + 1;
}

// (rows, cin, kh, kw) -> (rows, kh, kw, cin): K ordered tap by tap, matching NHWC source rows.
std::vector<float> taps_outer(const float* w, std::size_t rows, std::size_t cin, std::size_t kh,
                              std::size_t kw) {
  std::vector<float> out(rows * cin * kh * kw);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cin; ++c)
      for (std::size_t t = 0; t < kh * kw; ++t)
        out[(r * kh * kw + t) * cin + c] = w[(r * cin + c) * kh * kw + t];
  return out;
}

// Output rows computed together: enough pixels (>= 96) that each packed weight panel, loaded into
// L1/L2 once, serves many pixel tiles. Small feature maps (7x7) then run as one band, instead of
// re-streaming a large dense weight once per output row.
std::size_t band_rows(const ConvGeometry& g, std::size_t h, std::size_t w) {
  const std::size_t ho = g.out_h(h), wo = g.out_w(w);
  return std::max<std::size_t>(1, std::min(ho, (96 + wo - 1) / wo));
}

std::size_t ring_rows(const ConvGeometry& g, std::size_t band) {
  return (g.kh - 1) * g.dh + 1 + (band - 1) * g.sh;
}

// Implicit GEMM for a band of output rows: out (rows x wo x n) = sum over taps of source pixels x
// tap weights. src[r * kh + ky] points at the zero-padded source row (padded column 0) of kernel
// row ky for output row r; a source pixel is csrc floats. Per pixel tile, one micro-kernel call
// takes the kh * kw tap pointers and keeps the output tile in registers across all taps; the
// weight panel stays in L1/L2 while it sweeps the band's pixels.
void conv_output_rows(const ConvGeometry& g, const PackedWeights& w, std::size_t csrc,
                      std::size_t wo, std::size_t rows, const float* const* src, float* out,
                      std::size_t ldout) {
  const GemmKernels& ks = w.kernels();
  const std::size_t nr = ks.nr, mr = ks.mr, n = w.n(), ntaps = g.kh * g.kw;
  const std::size_t lda = g.sw * csrc;
  const std::size_t panels = w.num_panels();
  // Panels are independent output channels: threads may split them (a small map is one band).
  const std::size_t threads = std::min(panels, threads_for_flops(2.0 * rows * wo * n * ntaps * csrc));
  parallel_for(threads, threads, [&](std::size_t part) {
    const float* taps[kMaxTaps];
    for (std::size_t p = panels * part / threads; p < panels * (part + 1) / threads; ++p) {
      const std::size_t cols = std::min(nr, n - p * nr);
      const float* panel = w.panel_weights(p);
      for (std::size_t r = 0; r < rows; ++r) {
        const float* const* row_src = src + r * g.kh;
        for (std::size_t ox0 = 0; ox0 < wo; ox0 += mr) {
          const std::size_t px = std::min(mr, wo - ox0);
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const float* a = row_src[ky] + ox0 * lda;
            for (std::size_t kx = 0; kx < g.kw; ++kx) taps[ky * g.kw + kx] = a + kx * g.dw * csrc;
          }
          ks.ukernel[px](cols, csrc, ntaps, taps, lda, panel, w.panel_bias(p),
                         out + (r * wo + ox0) * ldout + p * nr, ldout);
        }
      }
    }
  });
}

// Scratch for one call, carved from the per-thread buffer.
struct ConvScratch {
  float* ring = nullptr;        // ring_rows zero-padded source rows of wp x csrc
  float* zero_row = nullptr;    // a padding row
  float* pixels_in = nullptr;   // NCHW input rows of a band as pixels (ring rows x w x cin)
  float* mid = nullptr;         // a band of kxk output rows (band x wo x n_kxk), Tucker only
  float* out = nullptr;         // a band of output rows as pixels (band x wo x cout), NCHW only
  const float** rows = nullptr;  // band x kh source row pointers
  float* extra = nullptr;        // layer-specific (CPConv2d: one vertically filtered row)
};

// Drives one image, band by band: the ring of source rows is filled on demand by
// fill(iy, interior, ld), each row once, after prepare(iy_begin, iy_end) saw the band's new rows; middle(src, rows, out) computes the kxk stage of a band
// (src: rows x kh source row pointers) into dest(oy0) (rows contiguous), then emit(oy0, rows, out)
// consumes it.
template <class Prepare, class Fill, class Middle, class Dest, class Emit>
void conv_image(const ConvGeometry& g, std::size_t h, std::size_t w, std::size_t csrc,
                const ConvScratch& s, std::size_t oy_begin, std::size_t oy_end, Prepare prepare,
                Fill fill, Middle middle, Dest dest, Emit emit) {
  const std::size_t ho = oy_end;
  const std::size_t band = band_rows(g, h, w);
  const std::size_t ring = ring_rows(g, band);
  const std::size_t row_floats = (w + 2 * g.pw) * csrc;
  auto ring_row = [&](long iy) { return s.ring + (static_cast<std::size_t>(iy) % ring) * row_floats; };
  long filled = -1;  // highest input row already in the ring
  for (std::size_t oy0 = oy_begin; oy0 < ho; oy0 += band) {
    const std::size_t rows = std::min(band, ho - oy0);
    const long iy_first = static_cast<long>(oy0 * g.sh) - static_cast<long>(g.ph);
    const long iy_last = static_cast<long>((oy0 + rows - 1) * g.sh + (g.kh - 1) * g.dh) -
                         static_cast<long>(g.ph);
    const long fill_begin = std::max(filled + 1, std::max(iy_first, 0L));
    const long fill_end = std::min(iy_last + 1, static_cast<long>(h));
    if (fill_begin < fill_end) {
      prepare(static_cast<std::size_t>(fill_begin), static_cast<std::size_t>(fill_end));
    }
    for (long iy = fill_begin; iy < fill_end; ++iy) {
      float* r = ring_row(iy);
      std::memset(r, 0, g.pw * csrc * sizeof(float));
      std::memset(r + (g.pw + w) * csrc, 0, g.pw * csrc * sizeof(float));
      fill(static_cast<std::size_t>(iy), r + g.pw * csrc, csrc);
      filled = iy;
    }
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t ky = 0; ky < g.kh; ++ky) {
        const long iy = static_cast<long>((oy0 + r) * g.sh + ky * g.dh) - static_cast<long>(g.ph);
        s.rows[r * g.kh + ky] = (iy < 0 || iy >= static_cast<long>(h)) ? s.zero_row : ring_row(iy);
      }
    }
    float* out = dest(oy0);
    middle(static_cast<const float* const*>(s.rows), rows, out);
    emit(oy0, rows, out);
  }
}

// Carves the scratch: sizes in floats, each part rounded to a cache line.
ConvScratch make_scratch(const ConvGeometry& g, std::size_t h, std::size_t w, std::size_t csrc,
                         std::size_t cin, std::size_t n_mid, std::size_t cout,
                         std::size_t extra = 0) {
  // Sizes are checked: on 32-bit ARM a wide padded row times many channels can exceed size_t.
  auto mul = [](std::size_t a, std::size_t b) {
    std::size_t r;
    if (__builtin_mul_overflow(a, b, &r)) throw std::length_error("convolution workspace too large");
    return r;
  };
  auto up = [](std::size_t f) {
    if (f > SIZE_MAX - 16) throw std::length_error("convolution workspace too large");
    return (f + 15) / 16 * 16;
  };
  const std::size_t wp = w + 2 * g.pw, wo = g.out_w(w), band = band_rows(g, h, w);
  const std::size_t pointer_floats = (sizeof(const float*) + sizeof(float) - 1) / sizeof(float);
  const std::size_t sizes[] = {up(mul(mul(ring_rows(g, band), wp), csrc)), up(mul(wp, csrc)),
                               up(mul(mul(ring_rows(g, band), w), cin)),
                               up(mul(mul(band, wo), n_mid)), up(mul(mul(band, wo), cout)),
                               up(mul(mul(band, g.kh), pointer_floats)), up(extra)};
  std::size_t total = 0;
  for (std::size_t v : sizes) {
    if (__builtin_add_overflow(total, v, &total)) throw std::length_error("convolution workspace too large");
  }
  float* base = thread_scratch(total);
  ConvScratch s;
  s.ring = base;
  s.zero_row = s.ring + sizes[0];
  s.pixels_in = s.zero_row + sizes[1];
  s.mid = s.pixels_in + sizes[2];
  s.out = s.mid + sizes[3];
  s.rows = reinterpret_cast<const float**>(s.out + sizes[4]);
  s.extra = s.out + sizes[4] + sizes[5];
  std::memset(s.zero_row, 0, sizes[1] * sizeof(float));
  return s;
}

// The schedule shared by the factorized convolutions: the first 1x1 stage fills the ring (its
// output channels are the source pixels), middle(src, rows, out) turns a band of source rows into
// last.k() channels per output pixel, and the last 1x1 stage (with the bias) writes the band to y
// in the input's layout. For NCHW, a band's new input rows are contiguous in every channel plane,
// so one transpose turns them all into pixels (whole SIMD tiles even when w is 7).
// Splits a call over (image, chunk of whole bands) tasks on the thread pool; body(n, oy_begin,
// oy_end) runs on the thread that takes the task and uses that thread's scratch. Chunks are whole
// bands, so every output element is computed exactly as with one thread (halo rows at a chunk
// edge are computed by both neighbours).
template <class Body>
void for_each_band_chunk(const ConvGeometry& g, const ConvInput& in, double flops, Body body) {
  if (in.n == 0) return;
  const std::size_t ho = g.out_h(in.h), band = band_rows(g, in.h, in.w);
  const std::size_t bands = (ho + band - 1) / band;
  const std::size_t threads = threads_for_flops(flops);
  const std::size_t chunks = std::min(bands, (threads + in.n - 1) / in.n);
  parallel_for(in.n * chunks, threads, [&](std::size_t task) {
    const std::size_t n = task / chunks, c = task % chunks;
    body(n, bands * c / chunks * band, std::min(ho, bands * (c + 1) / chunks * band));
  });
}

// The schedule shared by the factorized convolutions: the first 1x1 stage fills the ring (its
// output channels are the source pixels), the middle stage (make_middle(scratch) returns a
// functor (src, rows, out)) turns a band of source rows into last.k() channels per output pixel,
// and the last 1x1 stage (with the bias) writes the band to y in the input's layout. For NCHW, a
// band's new input rows are contiguous in every channel plane, so one transpose turns them all
// into pixels (whole SIMD tiles even when w is 7).
template <class MakeMiddle>
void factorized_conv(const GemmKernels& ks, const ConvGeometry& g, const ConvInput& in, float* y,
                     const PackedWeights& first, const PackedWeights& last, double middle_flops,
                     std::size_t extra_scratch, MakeMiddle make_middle) {
  const std::size_t cin = first.k(), csrc = first.n(), n_mid = last.k(), cout = last.n();
  const std::size_t ho = g.out_h(in.h), wo = g.out_w(in.w), w = in.w, plane = in.h * in.w;
  const double flops =
      in.n * (2.0 * plane * cin * csrc + middle_flops + 2.0 * ho * wo * n_mid * cout);
  for_each_band_chunk(g, in, flops, [&](std::size_t n, std::size_t oy_begin, std::size_t oy_end) {
    const ConvScratch s = make_scratch(g, in.h, w, csrc, cin, n_mid, cout, extra_scratch);
    auto middle = make_middle(s);
    auto mid_rows = [&](std::size_t) { return s.mid; };
    const float* x_img = in.x + n * plane * cin;
    float* y_img = y + n * cout * ho * wo;
    if (in.layout == Layout::nhwc) {
      conv_image(
          g, in.h, w, csrc, s, oy_begin, oy_end, [](std::size_t, std::size_t) {},
          [&](std::size_t iy, float* dst, std::size_t ld) {
            gemm(w, x_img + iy * w * cin, cin, first, dst, ld);
          },
          middle, mid_rows,
          [&](std::size_t oy0, std::size_t rows, const float* band) {
            gemm(rows * wo, band, n_mid, last, y_img + oy0 * wo * cout, cout);
          });
    } else {
      std::size_t rows_begin = 0;
      conv_image(
          g, in.h, w, csrc, s, oy_begin, oy_end,
          [&](std::size_t begin, std::size_t end) {
            rows_begin = begin;
            ks.transpose(x_img + begin * w, cin, (end - begin) * w, plane, s.pixels_in, cin);
          },
          [&](std::size_t iy, float* dst, std::size_t ld) {
            gemm(w, s.pixels_in + (iy - rows_begin) * w * cin, cin, first, dst, ld);
          },
          middle, mid_rows,
          [&](std::size_t oy0, std::size_t rows, const float* band) {
            gemm(rows * wo, band, n_mid, last, s.out, cout);
            ks.transpose(s.out, rows * wo, cout, cout, y_img + oy0 * wo, ho * wo);
          });
    }
  });
}

void check_input(const char* layer, const ConvInput& in, std::size_t cin, const ConvGeometry& g,
                 const float* y) {
  if (in.n == 0) return;
  if (in.x == nullptr || y == nullptr) throw std::invalid_argument(std::string(layer) + ": null x or y");
  if (in.c != cin) {
    throw std::invalid_argument(std::string(layer) + ": input has " + std::to_string(in.c) +
                                " channels, the layer expects " + std::to_string(cin));
  }
  if (g.out_h(in.h) == 0 || g.out_w(in.w) == 0) {
    throw std::invalid_argument(std::string(layer) + ": output size below 1 for a " +
                                std::to_string(in.h) + "x" + std::to_string(in.w) + " input");
  }
}

}  // namespace

std::size_t ConvGeometry::out_h(std::size_t h) const { return out_size(h, ph, dh, kh, sh); }
std::size_t ConvGeometry::out_w(std::size_t w) const { return out_size(w, pw, dw, kw, sw); }

Conv2dLayer::Conv2dLayer(const float* weight, std::size_t cout, std::size_t cin,
                         const float* bias, const ConvGeometry& g)
    : cin_(cin),
      g_((check_geometry(g), g)),
      weight_(weight, weight + cout * cin * g.kh * g.kw),
      w_(taps_outer(weight, cout, cin, g.kh, g.kw).data(), cout, g.kh * g.kw * cin, bias) {}

void Conv2dLayer::forward(const ConvInput& in, float* y) const {
  check_input("Conv2d", in, cin_, g_, y);
  const ScopedFlushDenormals ftz;  // see fp_mode.h
  const GemmKernels& ks = active_gemm_kernels();
  const PackedWeights& w = w_.packed_for(ks);
  const std::size_t cout = out_channels(), ho = g_.out_h(in.h), wo = g_.out_w(in.w);
  const std::size_t plane = in.h * in.w;
  const double flops = 2.0 * in.n * ho * wo * cout * cin_ * g_.kh * g_.kw;
  for_each_band_chunk(g_, in, flops, [&](std::size_t n, std::size_t oy_begin, std::size_t oy_end) {
    const ConvScratch s = make_scratch(g_, in.h, in.w, cin_, cin_, 0, cout);
    auto kxk_stage = [&](const float* const* src, std::size_t rows, float* out) {
      conv_output_rows(g_, w, cin_, wo, rows, src, out, cout);
    };
    const float* x_img = in.x + n * plane * cin_;
    float* y_img = y + n * cout * ho * wo;
    if (in.layout == Layout::nhwc) {
      conv_image(
          g_, in.h, in.w, cin_, s, oy_begin, oy_end, [](std::size_t, std::size_t) {},
          [&](std::size_t iy, float* dst, std::size_t) {
            std::memcpy(dst, x_img + iy * in.w * cin_, in.w * cin_ * sizeof(float));
          },
          kxk_stage, [&](std::size_t oy0) { return y_img + oy0 * wo * cout; },
          [](std::size_t, std::size_t, const float*) {});
    } else {
      conv_image(
          g_, in.h, in.w, cin_, s, oy_begin, oy_end, [](std::size_t, std::size_t) {},
          [&](std::size_t iy, float* dst, std::size_t ld) {
            ks.transpose(x_img + iy * in.w, cin_, in.w, plane, dst, ld);  // NCHW row -> pixels
          },
          kxk_stage, [&](std::size_t) { return s.out; },
          [&](std::size_t oy0, std::size_t rows, const float* band) {
            // The band's rows are contiguous in each NCHW channel plane: one transpose per band.
            ks.transpose(band, rows * wo, cout, cout, y_img + oy0 * wo, ho * wo);
          });
    }
  });
  record_used_isa(static_cast<Isa>(ks.isa));
}

TuckerConv2dLayer::TuckerConv2dLayer(const float* first, std::size_t r_in, std::size_t cin,
                                     const float* core, std::size_t r_out, const float* last,
                                     std::size_t cout, const float* bias, const ConvGeometry& g)
    : g_((check_geometry(g), g)),
      core_weight_(core, core + r_out * r_in * g.kh * g.kw),
      first_(first, r_in, cin, nullptr),
      core_(taps_outer(core, r_out, r_in, g.kh, g.kw).data(), r_out, g.kh * g.kw * r_in, nullptr),
      last_(last, cout, r_out, bias) {}

void TuckerConv2dLayer::forward(const ConvInput& in, float* y) const {
  check_input("TuckerConv2d", in, in_channels(), g_, y);
  const ScopedFlushDenormals ftz;  // see fp_mode.h
  const GemmKernels& ks = active_gemm_kernels();
  const PackedWeights& core = core_.packed_for(ks);
  const std::size_t r_in = rank_in(), r_out = rank_out(), wo = g_.out_w(in.w);
  const double core_flops = 2.0 * g_.out_h(in.h) * wo * r_out * r_in * g_.kh * g_.kw;
  factorized_conv(ks, g_, in, y, first_.packed_for(ks), last_.packed_for(ks), core_flops, 0,
                  [&](const ConvScratch&) {
                    return [&](const float* const* src, std::size_t rows, float* out) {
                      conv_output_rows(g_, core, r_in, wo, rows, src, out, r_out);
                    };
                  });
  record_used_isa(static_cast<Isa>(ks.isa));
}

namespace {

// (rank, taps) -> (taps, rank)
std::vector<float> taps_major(const float* w, std::size_t rank, std::size_t taps) {
  std::vector<float> out(rank * taps);
  for (std::size_t r = 0; r < rank; ++r)
    for (std::size_t t = 0; t < taps; ++t) out[t * rank + r] = w[r * taps + t];
  return out;
}

ConvGeometry with_kernel(ConvGeometry g, std::size_t kh, std::size_t kw) {
  g.kh = kh;
  g.kw = kw;
  check_geometry(g);
  return g;
}

}  // namespace

CPConv2dLayer::CPConv2dLayer(const float* first, std::size_t rank, std::size_t cin,
                             const float* vertical, std::size_t kh, const float* horizontal,
                             std::size_t kw, const float* last, std::size_t cout,
                             const float* bias, const ConvGeometry& g)
    : g_(with_kernel(g, kh, kw)),
      vertical_(vertical, vertical + rank * kh),
      horizontal_(horizontal, horizontal + rank * kw),
      vertical_taps_(taps_major(vertical, rank, kh)),
      horizontal_taps_(taps_major(horizontal, rank, kw)),
      first_(first, rank, cin, nullptr),
      last_(last, cout, rank, bias) {}

void CPConv2dLayer::forward(const ConvInput& in, float* y) const {
  const std::size_t rank = this->rank();
  check_input("CPConv2d", in, in_channels(), g_, y);
  const ScopedFlushDenormals ftz;  // see fp_mode.h
  const GemmKernels& ks = active_gemm_kernels();
  const std::size_t wo = g_.out_w(in.w), wp = in.w + 2 * g_.pw;
  const std::size_t row_floats = (wp * rank + 15) / 16 * 16;
  const std::size_t pointer_floats = (sizeof(const float*) + sizeof(float) - 1) / sizeof(float);
  const double depthwise_flops = 2.0 * g_.out_h(in.h) * (in.w * g_.kh + wo * g_.kw) * rank;
  factorized_conv(
      ks, g_, in, y, first_.packed_for(ks), last_.packed_for(ks), depthwise_flops,
      row_floats + g_.kw * pointer_floats, [&](const ConvScratch& s) {
        // One vertically filtered row, wp x rank. Only its interior is filtered: its padding
        // columns stay exactly zero, as the staged definition pads the vertical stage's output
        // (filtering padding would turn 0 * inf weights into NaN there).
        float* vertical_out = s.extra;
        std::memset(vertical_out, 0, wp * rank * sizeof(float));
        const float** horizontal_src = reinterpret_cast<const float**>(s.extra + row_floats);
        for (std::size_t kx = 0; kx < g_.kw; ++kx) {
          horizontal_src[kx] = vertical_out + kx * g_.dw * rank;
        }
        return [&, vertical_out, horizontal_src](const float* const* src, std::size_t rows,
                                                 float* out) {
          const float* vertical_src[kMaxTaps];
          for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t ky = 0; ky < g_.kh; ++ky) {
              vertical_src[ky] = src[r * g_.kh + ky] + g_.pw * rank;
            }
            ks.depthwise(in.w, rank, g_.kh, vertical_src, rank, vertical_taps_.data(),
                         vertical_out + g_.pw * rank, rank);
            ks.depthwise(wo, rank, g_.kw, horizontal_src, g_.sw * rank, horizontal_taps_.data(),
                         out + r * wo * rank, rank);
          }
        };
      });
  record_used_isa(static_cast<Isa>(ks.isa));
}

}  // namespace lrk
