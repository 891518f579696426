// The convolution chain: [1x1 first] -> middle (kxk implicit-GEMM conv, or kh x 1 then 1 x kw
// depthwise) -> [1x1 last] + bias; Conv2d is the middle stage alone, TuckerConv2d and CPConv2d the
// whole chain. One schedule for all of them:
//
// Output rows are computed in bands from a ring buffer of zero-padded NHWC source rows: the middle
// stage is an implicit GEMM (per kernel tap, the micro-kernel reads a strided run of source pixels
// in place, accumulating in its registers' tile), never an im2col buffer. With a first stage the
// source rows are its output (computed once per input row into the ring, no halo recomputation),
// and each band of middle output goes straight through the last stage: no intermediate tensor
// larger than a few rows is ever written.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "lrkernels/dispatch.h"
#include "lrkernels/layer.h"
#include "lrkernels/threadpool.h"

namespace lrk {
namespace {

// (rank, taps) -> (taps, rank)
std::vector<float> taps_major(const float* w, std::size_t rank, std::size_t taps) {
  std::vector<float> out(rank * taps);
  for (std::size_t r = 0; r < rank; ++r)
    for (std::size_t t = 0; t < taps; ++t) out[t * rank + r] = w[r * taps + t];
  return out;
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

// transpose() in column blocks of about 16 KB of destination: the kernel walks row blocks outer,
// so over a wide image each pass would leave half-written cache lines across the whole
// destination (measured: 256 channels x 196 pixels took 4x longer unblocked).
void blocked_transpose(F32TransposeFn transpose, const float* src, std::size_t rows,
                       std::size_t cols, std::size_t lds, float* dst, std::size_t ldd) {
  const std::size_t block = std::max<std::size_t>(8, 4096 / std::max<std::size_t>(rows, 1) / 8 * 8);
  for (std::size_t j = 0; j < cols; j += block)
    transpose(src + j, rows, std::min(block, cols - j), lds, dst + j * ldd, ldd);
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

// The band schedule of one call.
struct BandPlan {
  std::size_t band = 1;        // output rows per band
  std::size_t ring = 1;        // source rows the ring holds
  std::size_t row_pixels = 1;  // pixels of a ring row: w + 2 pw, and Winograd's extra column
};

// Winograd bands are whole rows of 2x2 tiles, enough (>= 64) that each transformed-domain GEMM has
// several pixel tiles per weight panel. The last tile of an odd-width row reads one column past
// the padded row: rows get one more zero column (it only feeds the output column dropped).
BandPlan band_plan(const ConvGeometry& g, std::size_t h, std::size_t w, bool winograd) {
  BandPlan p;
  p.row_pixels = w + 2 * g.pw;
  const std::size_t ho = g.out_h(h);
  if (winograd) {
    const std::size_t tiles_per_row = (g.out_w(w) + 1) / 2;
    p.band = std::max<std::size_t>(1, std::min(ho, 2 * ((64 + tiles_per_row - 1) / tiles_per_row)));
    p.row_pixels += 1;
  } else {
    p.band = band_rows(g, h, w);
  }
  p.ring = ring_rows(g, p.band);
  return p;
}

// Implicit GEMM for a band of output rows: out (rows x wo x n) = sum over taps of source pixels x
// tap weights. src[r * kh + ky] points at the zero-padded source row (padded column 0) of kernel
// row ky for output row r; a source pixel is csrc floats. Per pixel tile, one micro-kernel call
// takes the kh * kw tap pointers and keeps the output tile in registers across all taps; the
// weight panel stays in L1/L2 while it sweeps the band's pixels. When this is the chain's last
// stage, each tile is clamped as soon as it is stored.
void conv_output_rows(const ConvGeometry& g, const PackedWeights& w, std::size_t csrc,
                      std::size_t wo, std::size_t rows, const float* const* src, float* out,
                      std::size_t ldout, const OutputClamp& clamp) {
  const F32GemmConfig& ks = w.config();
  const std::size_t nr = ks.nr, mr = ks.mr, n = w.n(), ntaps = g.kh * g.kw;
  const std::size_t lda = g.sw * csrc;
  const std::size_t panels = w.num_panels();
  // Threads split (panel, output row) pairs, panel-major so that a thread's panels stay in its
  // cache (a small map is one band; a small rank is one panel).
  const std::size_t tasks = panels * rows;
  const std::size_t threads =
      std::min(tasks, threads_for_flops(2.0 * rows * wo * n * ntaps * csrc));
  parallel_for(threads, threads, [&](std::size_t part) {
    const float* taps[kMaxTaps];
    for (std::size_t task = tasks * part / threads; task < tasks * (part + 1) / threads; ++task) {
      const std::size_t p = task / rows, r = task % rows;
      const std::size_t cols = std::min(nr, n - p * nr);
      const void* panel = w.panel_weights(p);
      const float* const* row_src = src + r * g.kh;
      for (std::size_t ox0 = 0; ox0 < wo; ox0 += mr) {
        const std::size_t px = std::min(mr, wo - ox0);
        for (std::size_t ky = 0; ky < g.kh; ++ky) {
          const float* a = row_src[ky] + ox0 * lda;
          for (std::size_t kx = 0; kx < g.kw; ++kx) taps[ky * g.kw + kx] = a + kx * g.dw * csrc;
        }
        float* tile = out + (r * wo + ox0) * ldout + p * nr;
        ks.ukernel[px](cols, csrc, ntaps, taps, lda, panel, w.panel_bias(p), tile, ldout);
        clamp.apply(px, cols, tile, ldout);
      }
    }
  });
}

// The transformed core of F(2x2, 3x3): U[xi] = G g G^T per (output, input) channel pair, 16
// matrices (n x c), each a GEMM operand. G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]; computed
// in double and rounded once.
std::vector<std::vector<float>> winograd_weights(const float* w, std::size_t n, std::size_t c) {
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  std::vector<std::vector<float>> u(16, std::vector<float>(n * c));
  for (std::size_t o = 0; o < n; ++o) {
    for (std::size_t i = 0; i < c; ++i) {
      const float* g = w + (o * c + i) * 9;
      double gg[4][3];  // G g
      for (std::size_t a = 0; a < 4; ++a)
        for (std::size_t b = 0; b < 3; ++b)
          gg[a][b] = G[a][0] * g[b] + G[a][1] * g[3 + b] + G[a][2] * g[6 + b];
      for (std::size_t a = 0; a < 4; ++a)
        for (std::size_t b = 0; b < 4; ++b)
          u[4 * a + b][o * c + i] =
              static_cast<float>(gg[a][0] * G[b][0] + gg[a][1] * G[b][1] + gg[a][2] * G[b][2]);
    }
  }
  return u;
}

// Buffers of one Winograd band: the 16 transformed inputs (tiles x csrc each), the 16 GEMM
// outputs (tiles x n each) and a spill area (outputs past the image) per transform task, at most
// one per tile.
struct WinogradScratch {
  float* v = nullptr;
  float* m = nullptr;
  float* spill = nullptr;
};

std::size_t winograd_tiles(std::size_t band, std::size_t wo) {
  return (band + 1) / 2 * ((wo + 1) / 2);
}

std::size_t round_up16(std::size_t f) { return (f + 15) / 16 * 16; }

std::size_t winograd_scratch_floats(std::size_t band, std::size_t wo, std::size_t csrc,
                                    std::size_t n) {
  const std::size_t tiles = winograd_tiles(band, wo);
  return round_up16(16 * tiles * csrc) + round_up16(16 * tiles * n) + round_up16(tiles * 3 * n);
}

WinogradScratch carve_winograd(float* base, std::size_t band, std::size_t wo, std::size_t csrc,
                               std::size_t n) {
  const std::size_t tiles = winograd_tiles(band, wo);
  WinogradScratch w;
  w.v = base;
  w.m = w.v + round_up16(16 * tiles * csrc);
  w.spill = w.m + round_up16(16 * tiles * n);
  return w;
}

// The kxk stage of a band by F(2x2, 3x3): input tiles of the band's source rows transformed,
// 16 GEMMs on the f32 micro-kernels (one per transformed point, each pixel tile's sums in
// registers over all csrc channels), output tiles transformed into out (rows x wo x n, row stride
// ldout) with bias. src as conv_output_rows (rows x 3 row pointers), zero_row a padding row. Each
// phase splits its work over threads; every element is computed by one thread, in the same order
// for any thread count.
void winograd_output_rows(const F32WinogradConfig& wk, const PackedWeights* const* u,
                          std::size_t csrc, std::size_t wo, std::size_t rows,
                          const float* const* src, const float* zero_row, const float* bias,
                          const WinogradScratch& ws, float* out, std::size_t ldout,
                          const OutputClamp& clamp) {
  const std::size_t tile_rows = (rows + 1) / 2, tiles_per_row = (wo + 1) / 2;
  const std::size_t tiles = tile_rows * tiles_per_row, n = u[0]->n();
  const std::size_t v_stride = tiles * csrc, m_stride = tiles * n;
  // Transforms are memory-bound (a few cycles per tile and channel); inside a call the workers
  // are still spinning, so even a few microseconds of them are worth splitting.
  // Transform tasks take equal runs of tiles, not whole tile rows (5 rows on 2 threads would
  // leave one thread idle for a fifth of the time); a run is cut where a tile row ends.
  const std::size_t parts = std::min(tiles, threads_for_flops(512.0 * tiles * (csrc + n)));
  auto for_each_run = [&](std::size_t part, auto body) {
    for (std::size_t a = tiles * part / parts, b = tiles * (part + 1) / parts; a < b;) {
      const std::size_t tr = a / tiles_per_row, t0 = a % tiles_per_row;
      const std::size_t count = std::min(b - a, tiles_per_row - t0);
      body(tr, t0, count, a);
      a += count;
    }
  };
  parallel_for(parts, parts, [&](std::size_t part) {
    for_each_run(part, [&](std::size_t tr, std::size_t t0, std::size_t count, std::size_t a) {
      const std::size_t r = 2 * tr, at = 2 * t0 * csrc;
      const float* in_rows[4] = {src[r * 3] + at, src[r * 3 + 1] + at, src[r * 3 + 2] + at,
                                 (r + 1 < rows ? src[(r + 1) * 3 + 2] : zero_row) + at};
      wk.input(count, csrc, in_rows, ws.v + a * csrc, v_stride, csrc);
    });
  });

  const F32GemmConfig& ks = u[0]->config();
  const std::size_t mr = ks.mr, nr = ks.nr, panels = u[0]->num_panels(), tasks = 16 * panels;
  const std::size_t gemm_threads = std::min(tasks, threads_for_flops(32.0 * tiles * csrc * n));
  parallel_for(gemm_threads, gemm_threads, [&](std::size_t part) {
    for (std::size_t task = tasks * part / gemm_threads; task < tasks * (part + 1) / gemm_threads;
         ++task) {
      const std::size_t xi = task / panels, p = task % panels;
      const PackedWeights& w = *u[xi];
      const std::size_t cols = std::min(nr, n - p * nr);
      for (std::size_t t0 = 0; t0 < tiles; t0 += mr) {
        const float* a = ws.v + xi * v_stride + t0 * csrc;
        ks.ukernel[std::min(mr, tiles - t0)](cols, csrc, 1, &a, csrc, w.panel_weights(p),
                                             w.panel_bias(p),
                                             ws.m + xi * m_stride + t0 * n + p * nr, n);
      }
    }
  });

  parallel_for(parts, parts, [&](std::size_t part) {
    for_each_run(part, [&](std::size_t tr, std::size_t t0, std::size_t count, std::size_t a) {
      const std::size_t r = 2 * tr, x0 = 2 * t0, cols = std::min(2 * count, wo - x0);
      float* out0 = out + (r * wo + x0) * ldout;
      float* out1 = r + 1 < rows ? out0 + wo * ldout : nullptr;
      wk.output(count, n, ws.m + a * n, m_stride, n, bias, wo - x0, out0, out1, ldout,
                ws.spill + part * 3 * n);
      clamp.apply(cols, n, out0, ldout);
      if (out1 != nullptr) clamp.apply(cols, n, out1, ldout);
    });
  });
}

bool winograd_applies(const ConvGeometry& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1;
}

// The cost model of algorithm "auto". Winograd does 4/9 of the direct multiply-adds, but its
// transforms cost about 8 additions per output pixel per input and output channel, plus a round
// trip of the 16 transformed points through memory. Measured on AVX-512 (1 thread, benchmarks/
// test_bench_conv.py and A/B runs, 16-512 channels, 7x7 to 56x56 maps), Winograd was faster
// from 16 channels on either side: 1.01-1.36x at 16-32 channels, up to 2x for dense 128-256
// channel layers. Below 16 channels it was not measured, and direct is kept.
ConvAlgorithm resolve_algorithm(const std::string& kind, const ConvGeometry& g, Precision precision,
                                ConvAlgorithm requested, std::size_t csrc, std::size_t n) {
  if (requested == ConvAlgorithm::direct) return requested;
  const bool fits = winograd_applies(g) && precision == Precision::fp32;
  if (requested == ConvAlgorithm::winograd) {
    if (!fits) {
      throw std::invalid_argument(
          kind +
          ": algorithm=\"winograd\" needs a 3x3 kernel with stride 1 and dilation 1 and "
          "precision \"fp32\", got kernel (" +
          std::to_string(g.kh) + ", " + std::to_string(g.kw) + "), stride (" +
          std::to_string(g.sh) + ", " + std::to_string(g.sw) + "), dilation (" +
          std::to_string(g.dh) + ", " + std::to_string(g.dw) + "), precision \"" +
          precision_name(precision) + "\"");
    }
    return requested;
  }
  return fits && csrc >= 16 && n >= 16 ? ConvAlgorithm::winograd : ConvAlgorithm::direct;
}

// The 1x1 stages of an NCHW chain in the transposed orientation, channel planes in and out (no
// transpose of the image): C (rows x npx, row stride ldc) = A (rows x k, row stride lda) x P, where
// P (k x npx) is given as panels of nr pixel columns ([k][nr] each, panel stride k * nr). A's rows
// are the micro-kernel's broadcast rows, P's panels its weight panels (init: zeros), so each
// output element is the same FMA chain, in the same k order, as in the NHWC orientation.
void planar_gemm(const F32GemmConfig& ks, std::size_t rows, std::size_t k, const float* a,
                 std::size_t lda, const float* panels, std::size_t npx, float* c, std::size_t ldc,
                 const OutputClamp& clamp) {
  static const float kZeros[64] = {};
  const std::size_t mr = ks.mr, nr = ks.nr, num_panels = (npx + nr - 1) / nr;
  const std::size_t row_tiles = (rows + mr - 1) / mr, tasks = num_panels * row_tiles;
  const std::size_t threads = std::min(tasks, threads_for_flops(2.0 * rows * k * npx));
  parallel_for(threads, threads, [&](std::size_t part) {
    // Panel-major (pixel panel, row tile) pairs: a thread's panels stay in its L1.
    for (std::size_t task = tasks * part / threads; task < tasks * (part + 1) / threads; ++task) {
      const std::size_t p = task / row_tiles, r0 = task % row_tiles * mr;
      const std::size_t cols = std::min(nr, npx - p * nr), r = std::min(mr, rows - r0);
      const float* ar = a + r0 * lda;
      float* tile = c + r0 * ldc + p * nr;
      ks.ukernel[r](cols, k, 1, &ar, lda, panels + p * k * nr, kZeros, tile, ldc);
      clamp.apply(r, cols, tile, ldc);
    }
  });
}

// Scratch for one call, carved from the per-thread buffer.
struct ConvScratch {
  float* ring = nullptr;         // ring_rows zero-padded source rows of wp x csrc
  float* zero_row = nullptr;     // a padding row
  float* pixels_in = nullptr;    // NCHW input rows of a band as pixels (ring rows x w x cin)
  float* mid = nullptr;          // a band of kxk output rows (band x wo x n_kxk), Tucker only
  float* out = nullptr;          // a band of output rows as pixels (band x wo x cout), NCHW only
  const float** rows = nullptr;  // band x kh source row pointers
  float* extra = nullptr;        // layer-specific (CPConv2d: one vertically filtered row)
};

// Drives one image, band by band: the ring of source rows is filled on demand by
// fill(iy, interior, ld), each row once, after prepare(iy_begin, iy_end, interior_of) saw the
// band's new rows (it may fill their interiors itself: interior_of(iy) is row iy's);
// middle(src, rows, out) computes the kxk stage of a band (src: rows x kh source row pointers) into
// dest(oy0) (rows contiguous), then emit(oy0, rows, out) consumes it.
template <class Prepare, class Fill, class Middle, class Dest, class Emit>
void conv_image(const ConvGeometry& g, const BandPlan& plan, std::size_t h, std::size_t w,
                std::size_t csrc, const ConvScratch& s, std::size_t oy_begin, std::size_t oy_end,
                Prepare prepare, Fill fill, Middle middle, Dest dest, Emit emit) {
  const std::size_t ho = oy_end;
  const std::size_t band = plan.band, ring = plan.ring;
  const std::size_t row_floats = plan.row_pixels * csrc;
  const std::size_t right_pad = plan.row_pixels - g.pw - w;
  auto ring_row = [&](long iy) {
    return s.ring + (static_cast<std::size_t>(iy) % ring) * row_floats;
  };
  long filled = -1;  // highest input row already in the ring
  for (std::size_t oy0 = oy_begin; oy0 < ho; oy0 += band) {
    const std::size_t rows = std::min(band, ho - oy0);
    const long iy_first = static_cast<long>(oy0 * g.sh) - static_cast<long>(g.ph);
    const long iy_last =
        static_cast<long>((oy0 + rows - 1) * g.sh + (g.kh - 1) * g.dh) - static_cast<long>(g.ph);
    const long fill_begin = std::max(filled + 1, std::max(iy_first, 0L));
    const long fill_end = std::min(iy_last + 1, static_cast<long>(h));
    if (fill_begin < fill_end) {
      prepare(static_cast<std::size_t>(fill_begin), static_cast<std::size_t>(fill_end),
              [&](std::size_t iy) { return ring_row(static_cast<long>(iy)) + g.pw * csrc; });
    }
    for (long iy = fill_begin; iy < fill_end; ++iy) {
      float* r = ring_row(iy);
      std::memset(r, 0, g.pw * csrc * sizeof(float));
      std::memset(r + (g.pw + w) * csrc, 0, right_pad * csrc * sizeof(float));
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
ConvScratch make_scratch(const ConvGeometry& g, const BandPlan& plan, std::size_t w,
                         std::size_t csrc, std::size_t cin, std::size_t n_mid, std::size_t cout,
                         std::size_t extra = 0) {
  // Sizes are checked: on 32-bit ARM a wide padded row times many channels can exceed size_t.
  auto mul = [](std::size_t a, std::size_t b) {
    std::size_t r;
    if (__builtin_mul_overflow(a, b, &r))
      throw std::length_error("convolution workspace too large");
    return r;
  };
  auto up = [](std::size_t f) {
    if (f > SIZE_MAX - 16) throw std::length_error("convolution workspace too large");
    return (f + 15) / 16 * 16;
  };
  const std::size_t wp = plan.row_pixels, wo = g.out_w(w), band = plan.band;
  const std::size_t pointer_floats = (sizeof(const float*) + sizeof(float) - 1) / sizeof(float);
  const std::size_t sizes[] = {up(mul(mul(plan.ring, wp), csrc)),
                               up(mul(wp, csrc)),
                               up(mul(mul(plan.ring, w), cin)),
                               up(mul(mul(band, wo), n_mid)),
                               up(mul(mul(band, wo), cout)),
                               up(mul(mul(band, g.kh), pointer_floats)),
                               up(extra)};
  std::size_t total = 0;
  for (std::size_t v : sizes) {
    if (__builtin_add_overflow(total, v, &total))
      throw std::length_error("convolution workspace too large");
  }
  float* base = thread_scratch<float>(total);
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

// Shape of one call: x is (n, c, h, w) for NCHW or (n, h, w, c) for NHWC, contiguous float32.
struct ConvInput {
  const float* x = nullptr;
  std::size_t n = 0, c = 0, h = 0, w = 0;
  Layout layout = Layout::nchw;
};

ConvInput conv_input(const float* x, const Shape& x_shape, Layout layout) {
  const bool nchw = layout == Layout::nchw;
  ConvInput in;
  in.x = x;
  in.layout = layout;
  in.n = x_shape[0];
  in.c = x_shape[nchw ? 1 : 3];
  in.h = x_shape[nchw ? 2 : 1];
  in.w = x_shape[nchw ? 3 : 2];
  return in;
}

// Splits a call over (image, chunk of whole bands) tasks on the thread pool; body(n, oy_begin,
// oy_end) runs on the thread that takes the task and uses that thread's scratch. Chunks are whole
// bands, so every output element is computed exactly as with one thread (halo rows at a chunk
// edge are computed by both neighbours).
//
// split_inside: every stage of a band splits its own work over threads, so an image whose bands
// do not divide evenly among the threads (3 bands on 2 threads: one waits for the other's second
// band) runs band after band instead, each on all threads.
template <class Body>
void for_each_band_chunk(const ConvGeometry& g, const BandPlan& plan, const ConvInput& in,
                         double flops, bool split_inside, Body body) {
  if (in.n == 0) return;
  const std::size_t ho = g.out_h(in.h), band = plan.band;
  const std::size_t bands = (ho + band - 1) / band;
  const std::size_t threads = threads_for_flops(flops);
  std::size_t chunks = std::min(bands, (threads + in.n - 1) / in.n);
  if (split_inside && chunks > 1 && bands % chunks != 0 && bands < 4 * chunks) chunks = 1;
  parallel_for(in.n * chunks, threads, [&](std::size_t task) {
    const std::size_t n = task / chunks, c = task % chunks;
    body(n, bands * c / chunks * band, std::min(ho, bands * (c + 1) / chunks * band));
  });
}

}  // namespace

// The packed weights of a chain: optional 1x1 stages around the middle stage.
struct ConvChain::Stages {
  std::unique_ptr<WeightOperand> first;  // (csrc, cin)
  ConvMiddle::Kind middle = ConvMiddle::kxk_conv;
  std::unique_ptr<WeightOperand> core;  // kxk_conv: (n_mid, kh * kw * csrc), K ordered (ky, kx, c)
  // algorithm winograd: the core transformed, U[xi] (n_mid, csrc) for the 16 points, in place of
  // `core`; the core's bias (Conv2d) is added by the output transform.
  ConvAlgorithm algorithm = ConvAlgorithm::direct;
  std::vector<std::unique_ptr<WeightOperand>> winograd;
  const float* winograd_bias = nullptr;
  // NCHW fp32 chains with a last 1x1 stage: its row-major A operand for planar_gemm, led by the
  // bias, (cout, 1 + n_mid): a panel row of ones makes the bias the first term of each sum, as the
  // packed bias is in the NHWC orientation.
  std::vector<float> planar_last;
  std::vector<float> vertical_taps, horizontal_taps;  // depthwise_hv: (taps, rank)
  std::unique_ptr<WeightOperand> last;  // (cout, n_mid), carries the bias when present
  // precision int8: the same stages quantized (the core's K: taps x csrc channels)
  std::unique_ptr<QuantizedOperand> qfirst, qcore, qlast;
  std::size_t cin = 0, csrc = 0, n_mid = 0, cout = 0;
};

ConvChain::~ConvChain() = default;

ConvChain::ConvChain(std::string kind, std::vector<Factor> factors, const float* bias,
                     const Factor* first, const ConvMiddle& middle, const Factor* last,
                     const ConvGeometry& g, Layout layout, Precision precision,
                     ConvAlgorithm algorithm)
    : Layer(std::move(kind), std::move(factors), bias,
            last ? last->shape[0] : middle.weight->shape[0], precision),
      g_(g),
      layout_(layout),
      stages_(std::make_unique<Stages>()) {
  g_.check();
  const bool int8 = precision == Precision::int8;
  if (int8 && middle.kind != ConvMiddle::kxk_conv) {
    throw std::invalid_argument(kind_ + ": precision=\"int8\" needs a kxk core");
  }
  const KernelSet& ks = active_kernel_set();
  const F32GemmConfig* prepack = &gemm_config_for(ks, precision);
  const QD8GemmConfig* qprepack = int8 ? &qd8_config_for(ks) : nullptr;
  Stages& st = *stages_;
  st.middle = middle.kind;
  if (first != nullptr) {
    st.cin = first->shape[1];
    st.csrc = first->shape[0];
    if (int8) {
      st.qfirst = std::make_unique<QuantizedOperand>(first->data.data(), st.csrc, st.cin, 1,
                                                     nullptr, qprepack);
    } else {
      st.first =
          std::make_unique<WeightOperand>(first->data.data(), st.csrc, st.cin, nullptr, prepack);
    }
  }
  if (middle.kind == ConvMiddle::kxk_conv) {
    const Factor& w = *middle.weight;  // (n_mid, csrc, kh, kw)
    if (first == nullptr) st.cin = st.csrc = w.shape[1];
    st.n_mid = w.shape[0];
    st.algorithm = resolve_algorithm(kind_, g_, precision, algorithm, st.csrc, st.n_mid);
    if (st.algorithm == ConvAlgorithm::winograd) {
      for (auto& u : winograd_weights(w.data.data(), st.n_mid, st.csrc)) {
        st.winograd.push_back(
            std::make_unique<WeightOperand>(std::move(u), st.n_mid, st.csrc, nullptr, prepack));
      }
      st.winograd_bias = last ? nullptr : this->bias();
    }
  }
  if (middle.kind == ConvMiddle::kxk_conv && st.algorithm == ConvAlgorithm::direct) {
    const Factor& w = *middle.weight;
    std::vector<float> core = taps_outer(w.data.data(), st.n_mid, st.csrc, g_.kh, g_.kw);
    const float* core_bias = last ? nullptr : this->bias();
    if (int8) {
      st.qcore = std::make_unique<QuantizedOperand>(core.data(), st.n_mid, st.csrc, g_.kh * g_.kw,
                                                    core_bias, qprepack);
    } else {
      st.core = std::make_unique<WeightOperand>(std::move(core), st.n_mid, g_.kh * g_.kw * st.csrc,
                                                core_bias, prepack);
    }
  } else if (middle.kind == ConvMiddle::depthwise_hv) {
    if (algorithm != ConvAlgorithm::automatic && algorithm != ConvAlgorithm::direct) {
      throw std::invalid_argument(kind_ +
                                  " has no kxk core: algorithm=\"winograd\" needs one (use "
                                  "\"auto\" or \"direct\")");
    }
    st.n_mid = st.csrc;
    st.vertical_taps = taps_major(middle.vertical->data.data(), st.csrc, g_.kh);
    st.horizontal_taps = taps_major(middle.horizontal->data.data(), st.csrc, g_.kw);
  }
  if (last != nullptr && int8) {
    st.qlast = std::make_unique<QuantizedOperand>(last->data.data(), last->shape[0], last->shape[1],
                                                  1, this->bias(), qprepack);
  } else if (last != nullptr) {
    st.last = std::make_unique<WeightOperand>(last->data.data(), last->shape[0], last->shape[1],
                                              this->bias(), prepack);
  }
  st.cout = out_dim_;
  if (layout == Layout::nchw && last != nullptr && precision == Precision::fp32) {
    const std::size_t n_mid = last->shape[1];
    st.planar_last.assign(st.cout * (1 + n_mid), 0.0f);
    for (std::size_t o = 0; o < st.cout; ++o) {
      if (this->bias() != nullptr) st.planar_last[o * (1 + n_mid)] = this->bias()[o];
      std::copy_n(last->data.data() + o * n_mid, n_mid,
                  st.planar_last.begin() + o * (1 + n_mid) + 1);
    }
  }
  in_dim_ = st.cin;
  if (first != nullptr) ranks_.push_back(st.csrc);
  if (first != nullptr && middle.kind == ConvMiddle::kxk_conv) ranks_.push_back(st.n_mid);
}

ConvAlgorithm ConvChain::algorithm() const { return stages_->algorithm; }

Shape ConvChain::output_shape(const Shape& x) const {
  const bool nchw = layout_ == Layout::nchw;
  if (x.size() != 4) {
    throw std::invalid_argument(kind_ + " with layout " + layout_name(layout_) +
                                " expects x of shape " + (nchw ? "(N, C, H, W)" : "(N, H, W, C)") +
                                ", got shape " + shape_str(x));
  }
  const std::size_t n = x[0], c = x[nchw ? 1 : 3], h = x[nchw ? 2 : 1], w = x[nchw ? 3 : 2];
  if (h > kMaxImageSide || w > kMaxImageSide) {
    throw std::invalid_argument(kind_ + ": x of shape " + shape_str(x) + " is too large");
  }
  if (c != in_dim_) {
    throw std::invalid_argument(kind_ + " has in_channels=" + std::to_string(in_dim_) +
                                ", but x of shape " + shape_str(x) + " has " + std::to_string(c) +
                                " channels (layout " + layout_name(layout_) + ")");
  }
  const std::size_t ho = g_.out_h(h), wo = g_.out_w(w);
  if (ho == 0 || wo == 0) {
    auto pair = [](std::size_t a, std::size_t b) {
      return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
    };
    throw std::invalid_argument(kind_ + ": output size below 1 for x of shape " + shape_str(x) +
                                " with kernel " + pair(g_.kh, g_.kw) + ", stride " +
                                pair(g_.sh, g_.sw) + ", padding " + pair(g_.ph, g_.pw) +
                                ", dilation " + pair(g_.dh, g_.dw));
  }
  return nchw ? Shape{n, out_dim_, ho, wo} : Shape{n, ho, wo, out_dim_};
}

void ConvChain::run_stages(const KernelSet& ks, const float* x, const Shape& x_shape, std::size_t,
                           float* y) const {
  const Stages& st = *stages_;
  const ConvGeometry& g = g_;
  const bool nchw = layout_ == Layout::nchw;
  const ConvInput in = conv_input(x, x_shape, layout_);
  if (precision_ == Precision::int8) {
    run_int8(ks, x, x_shape, y);
    return;
  }
  const F32GemmConfig& gemm_config = gemm_config_for(ks, precision_);
  record_used_kernel(gemm_config.name);
  const F32TransposeFn transpose = ks.f32_transpose->transpose;
  const F32DwconvFn depthwise = ks.f32_dwconv->depthwise;
  // Only the chain's last stage is clamped: the last 1x1 stage, else the kxk middle (Conv2d).
  const OutputClamp clamp = output_clamp(ks);
  const OutputClamp middle_clamp = st.last ? OutputClamp() : clamp;
  const PackedWeights* first = st.first ? &st.first->packed_for(gemm_config) : nullptr;
  const PackedWeights* core = st.core ? &st.core->packed_for(gemm_config) : nullptr;
  const PackedWeights* last = st.last ? &st.last->packed_for(gemm_config) : nullptr;
  const bool winograd = st.algorithm == ConvAlgorithm::winograd;
  const PackedWeights* u[16] = {};
  for (std::size_t xi = 0; xi < st.winograd.size(); ++xi)
    u[xi] = &st.winograd[xi]->packed_for(gemm_config);
  const std::size_t cin = st.cin, csrc = st.csrc, n_mid = st.n_mid, cout = st.cout;
  const std::size_t w = in.w, ho = g.out_h(in.h), wo = g.out_w(w), plane = in.h * w;
  const std::size_t wp = w + 2 * g.pw;
  const BandPlan plan = band_plan(g, in.h, w, winograd);
  // NCHW with a last 1x1 stage (fp32): that stage writes the channel planes of y itself
  // (planar_gemm), from the band's middle output packed as pixel panels.
  const bool planar = !st.planar_last.empty();
  const std::size_t nr = gemm_config.nr, band_px = plan.band * wo;

  // Per-call flops decide how many threads are worth waking.
  const double middle_flops = st.middle == ConvMiddle::kxk_conv
                                  ? 2.0 * ho * wo * n_mid * csrc * (winograd ? 4 : g.kh * g.kw)
                                  : 2.0 * ho * (w * g.kh + wo * g.kw) * csrc;
  const double flops = in.n * ((first ? 2.0 * plane * cin * csrc : 0.0) + middle_flops +
                               (last ? 2.0 * ho * wo * n_mid * cout : 0.0));
  // The depthwise middle keeps one vertically filtered row (wp x rank) and kw tap pointers.
  const std::size_t row_floats = (wp * csrc + 15) / 16 * 16;
  const std::size_t pointer_floats = (sizeof(const float*) + sizeof(float) - 1) / sizeof(float);
  // Winograd: the transformed points of a band. Planar: the band's middle output as panels.
  const std::size_t middle_extra = st.middle == ConvMiddle::depthwise_hv
                                       ? row_floats + g.kw * pointer_floats
                                   : winograd ? winograd_scratch_floats(plan.band, wo, csrc, n_mid)
                                              : 0;
  const std::size_t planar_floats = planar ? (band_px + nr - 1) / nr * nr * (1 + n_mid) : 0;
  const std::size_t extra = round_up16(middle_extra) + planar_floats;

  for_each_band_chunk(
      g, plan, in, flops, winograd, [&](std::size_t n, std::size_t oy_begin, std::size_t oy_end) {
        const ConvScratch s = make_scratch(g, plan, w, csrc, first && nchw ? cin : 0,
                                           last ? n_mid : 0, nchw ? cout : 0, extra);
        float* mid_panels = s.extra + round_up16(middle_extra);
        const float* x_img = in.x + n * plane * cin;
        float* y_img = y + n * cout * ho * wo;

        // The middle stage of a band: src holds rows x kh source row pointers; out gets rows x wo
        // pixels of n_mid channels (row stride ld).
        const float** horizontal_src = nullptr;
        float* vertical_out = nullptr;
        if (st.middle == ConvMiddle::depthwise_hv) {
          // Only the interior of the vertically filtered row is filtered: its padding columns stay
          // exactly zero, as the staged definition pads the vertical stage's output (filtering
          // padding would turn 0 * inf weights into NaN there).
          vertical_out = s.extra;
          std::memset(vertical_out, 0, wp * csrc * sizeof(float));
          horizontal_src = reinterpret_cast<const float**>(s.extra + row_floats);
          for (std::size_t kx = 0; kx < g.kw; ++kx)
            horizontal_src[kx] = vertical_out + kx * g.dw * csrc;
        }
        auto middle = [&](const float* const* src, std::size_t rows, float* out) {
          if (winograd) {
            winograd_output_rows(
                *ks.f32_winograd, u, csrc, wo, rows, src, s.zero_row, st.winograd_bias,
                carve_winograd(s.extra, plan.band, wo, csrc, n_mid), out, n_mid, middle_clamp);
            return;
          }
          if (st.middle == ConvMiddle::kxk_conv) {
            conv_output_rows(g, *core, csrc, wo, rows, src, out, n_mid, middle_clamp);
            return;
          }
          const float* vertical_src[kMaxTaps];
          for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t ky = 0; ky < g.kh; ++ky)
              vertical_src[ky] = src[r * g.kh + ky] + g.pw * csrc;
            depthwise(w, csrc, g.kh, vertical_src, csrc, st.vertical_taps.data(),
                      vertical_out + g.pw * csrc, csrc);
            depthwise(wo, csrc, g.kw, horizontal_src, g.sw * csrc, st.horizontal_taps.data(),
                      out + r * wo * csrc, csrc);
            middle_clamp.apply(wo, csrc, out + r * wo * csrc, csrc);  // a chain without last stage
          }
        };

        // Where a band of middle output goes: the scratch when a last stage follows, else the
        // output itself (NHWC) or a pixel buffer to transpose (NCHW).
        auto dest = [&](std::size_t oy0) {
          if (last) return s.mid;
          return nchw ? s.out : y_img + oy0 * wo * cout;
        };
        auto emit = [&](std::size_t oy0, std::size_t rows, const float* band) {
          if (last) {
            if (!nchw) {
              gemm(rows * wo, band, n_mid, *last, y_img + oy0 * wo * cout, cout, clamp);
              return;
            }
            // Planar for whole panels of pixels. The rest (fewer than nr pixels: a 7x7 map is 49)
            // would waste most of a panel's FMAs, so it takes the pixel orientation and a small
            // transpose.
            const std::size_t npx = rows * wo, full = planar ? npx / nr * nr : 0;
            if (full > 0) {
              // Panel p: a row of ones (the bias term), then the n_mid channels of nr pixels.
              const std::size_t k = 1 + n_mid;
              const std::size_t panels = full / nr;
              parallel_for(panels, std::min(panels, threads_for_flops(32.0 * full * n_mid)),
                           [&](std::size_t p) {
                             float* panel = mid_panels + p * k * nr;
                             std::fill_n(panel, nr, 1.0f);
                             transpose(band + p * nr * n_mid, nr, n_mid, n_mid, panel + nr, nr);
                           });
              planar_gemm(gemm_config, cout, k, st.planar_last.data(), k, mid_panels, full,
                          y_img + oy0 * wo, ho * wo, clamp);
              if (full == npx) return;
            }
            gemm(npx - full, band + full * n_mid, n_mid, *last, s.out, cout, clamp);
            blocked_transpose(transpose, s.out, npx - full, cout, cout, y_img + oy0 * wo + full,
                              ho * wo);
            return;
          } else if (!nchw) {
            return;  // the middle stage wrote y directly
          }
          // The band's rows are contiguous in each NCHW channel plane: one transpose per band.
          blocked_transpose(transpose, band, rows * wo, cout, cout, y_img + oy0 * wo, ho * wo);
        };

        // How source rows enter the ring: through the first stage (in prepare, below), or copied
        // (NHWC) / transposed (NCHW) from x (in fill). For NCHW with a first stage, a band's new
        // input rows are contiguous in every channel plane, so one transpose per thread's rows
        // turns them into pixels (whole SIMD tiles even for w = 7).
        // The first stage runs in prepare, for all of a band's new rows at once, split over threads
        // by rows (a small map is one band: its first stage would otherwise run on one thread).
        auto prepare = [&](std::size_t begin, std::size_t end, auto interior_of) {
          if (!first) return;
          const std::size_t count = end - begin;
          const std::size_t threads =
              std::min(count, threads_for_flops(2.0 * count * w * cin * csrc));
          parallel_for(threads, threads, [&](std::size_t part) {
            const std::size_t r0 = begin + count * part / threads;
            const std::size_t r1 = begin + count * (part + 1) / threads;
            if (r0 == r1) return;
            const float* pixels = x_img + r0 * w * cin;
            if (nchw) {
              float* dst = s.pixels_in + (r0 - begin) * w * cin;
              blocked_transpose(transpose, x_img + r0 * w, cin, (r1 - r0) * w, plane, dst, cin);
              pixels = dst;
            }
            for (std::size_t iy = r0; iy < r1; ++iy)
              gemm(w, pixels + (iy - r0) * w * cin, cin, *first, interior_of(iy), csrc);
          });
        };
        auto fill = [&](std::size_t iy, float* dst, std::size_t ld) {
          if (first) {
            return;  // prepare computed it
          } else if (nchw) {
            blocked_transpose(transpose, x_img + iy * w, cin, w, plane, dst,
                              ld);  // NCHW row -> pixels
          } else {
            std::memcpy(dst, x_img + iy * w * cin, w * cin * sizeof(float));
          }
        };
        conv_image(g, plan, in.h, w, csrc, s, oy_begin, oy_end, prepare, fill, middle, dest, emit);
      });
}

// precision int8: the same band schedule. Quantization is per block of pixels, not per pixel (per
// pixel, the range reductions and calls cost more than the MACs of a rank-16 stage): the first
// 1x1 stage's input per image row, the kxk core's per band over every source row the band reads
// (padding included, which becomes the zero point: the implicit GEMM's taps come from different
// pixels and must share one scale), the last 1x1 stage's per band of pixels.
// lrkernels.reference.qd8_tucker_conv2d replays it exactly.
void ConvChain::run_int8(const KernelSet& ks, const float* x, const Shape& x_shape,
                         float* y) const {
  const Stages& st = *stages_;
  const ConvGeometry& g = g_;
  const bool nchw = layout_ == Layout::nchw;
  const ConvInput in = conv_input(x, x_shape, layout_);
  const QD8GemmConfig& q = qd8_config_for(ks);
  record_used_kernel(q.name);
  const F32TransposeFn transpose = ks.f32_transpose->transpose;
  const OutputClamp clamp = output_clamp(ks);
  const OutputClamp middle_clamp = st.qlast ? OutputClamp() : clamp;
  const QuantizedOperand::Packed& core = st.qcore->packed_for(q);
  const std::size_t cin = st.cin, csrc = st.csrc, n_mid = st.n_mid, cout = st.cout;
  const std::size_t w = in.w, ho = g.out_h(in.h), wo = g.out_w(w), plane = in.h * w;
  const std::size_t wp = w + 2 * g.pw, ntaps = g.kh * g.kw;
  const std::size_t cpad = (csrc + 3) / 4 * 4;  // bytes of a quantized source pixel
  const BandPlan plan = band_plan(g, in.h, w, false);
  const std::size_t band = plan.band, ring = plan.ring;
  const std::size_t nr = q.nr, mr = q.mr, panels = (n_mid + nr - 1) / nr;
  const double flops =
      in.n * ((st.qfirst ? 2.0 * plane * cin * csrc : 0.0) + 2.0 * ho * wo * n_mid * csrc * ntaps +
              (st.qlast ? 2.0 * ho * wo * n_mid * cout : 0.0));

  // Per-thread int8 workspace (the f32 ring and band buffers are make_scratch's).
  auto up = [](std::size_t b) { return (b + 63) / 64 * 64; };
  const std::size_t qrow_bytes = up(checked_bytes(wp, cpad, "convolution workspace"));
  const std::size_t first_ws = st.qfirst ? qd8_gemm_workspace_bytes(q, w, cin, csrc) : 0;
  const std::size_t last_ws = st.qlast ? qd8_gemm_workspace_bytes(q, band * wo, n_mid, cout) : 0;
  const std::size_t distinct = ring + 1;  // source rows a band can read, and the zero row
  const std::size_t sizes[] = {
      checked_bytes(distinct, qrow_bytes, "convolution workspace"),
      up(distinct * 2 * sizeof(void*)),
      up(band * g.kh * sizeof(void*)),
      up(checked_bytes(band * wo, n_mid * sizeof(std::int32_t), "convolution workspace")),
      up(first_ws),
      up(last_ws)};
  std::size_t total = 0;
  for (std::size_t b : sizes) {
    if (__builtin_add_overflow(total, b, &total))
      throw std::length_error("convolution workspace too large");
  }

  for_each_band_chunk(
      g, plan, in, flops / 4, false, [&](std::size_t n, std::size_t oy_begin, std::size_t oy_end) {
        const ConvScratch s = make_scratch(g, plan, w, csrc, st.qfirst && nchw ? cin : 0,
                                           st.qlast ? n_mid : 0, nchw ? cout : 0);
        char* base = static_cast<char*>(thread_workspace_bytes(total));
        std::int8_t* qrows = reinterpret_cast<std::int8_t*>(base);
        const float** keys = reinterpret_cast<const float**>(base + sizes[0]);
        const std::int8_t** values = reinterpret_cast<const std::int8_t**>(keys + distinct);
        const std::int8_t** qsrc =
            reinterpret_cast<const std::int8_t**>(base + sizes[0] + sizes[1]);
        std::int32_t* acc = reinterpret_cast<std::int32_t*>(base + sizes[0] + sizes[1] + sizes[2]);
        void* ws_first = base + sizes[0] + sizes[1] + sizes[2] + sizes[3];
        void* ws_last = static_cast<char*>(ws_first) + sizes[4];
        const float* x_img = in.x + n * plane * cin;
        float* y_img = y + n * cout * ho * wo;

        auto middle = [&](const float* const* src, std::size_t rows, float* out) {
          // The distinct source rows of the band (the zero row included), their common range.
          std::size_t count = 0;
          RowQuant band_q;
          for (std::size_t i = 0; i < rows * g.kh; ++i) {
            std::size_t j = 0;
            while (j < count && keys[j] != src[i]) ++j;
            if (j == count) {
              keys[count] = src[i];
              values[count] = qrows + count * qrow_bytes;
              q.range(wp * csrc, src[i], &band_q);
              ++count;
            }
            qsrc[i] = values[j];
          }
          choose_quantization(&band_q);
          for (std::size_t j = 0; j < count; ++j) {
            std::int8_t* dst = const_cast<std::int8_t*>(values[j]);
            if (cpad == csrc) {
              q.quantize(wp * csrc, wp * csrc, keys[j], &band_q, q.input_offset, dst);
            } else {
              for (std::size_t px = 0; px < wp; ++px)
                q.quantize(csrc, cpad, keys[j] + px * csrc, &band_q, q.input_offset,
                           dst + px * cpad);
            }
          }
          // The implicit GEMM: per pixel tile, one micro-kernel call over every tap (int32 sums);
          // threads split the panels and dequantize their columns.
          const std::size_t lda = g.sw * cpad;
          const std::size_t threads =
              std::min(panels, threads_for_flops(0.5 * rows * wo * n_mid * csrc * ntaps));
          parallel_for(threads, threads, [&](std::size_t part) {
            const std::size_t p0 = panels * part / threads, p1 = panels * (part + 1) / threads;
            if (p0 >= p1) return;
            const std::int8_t* taps[kMaxTaps];
            for (std::size_t p = p0; p < p1; ++p) {
              const std::size_t cols = std::min(nr, n_mid - p * nr);
              for (std::size_t r = 0; r < rows; ++r) {
                for (std::size_t ox0 = 0; ox0 < wo; ox0 += mr) {
                  const std::size_t px = std::min(mr, wo - ox0);
                  for (std::size_t ky = 0; ky < g.kh; ++ky) {
                    const std::int8_t* a = qsrc[r * g.kh + ky] + ox0 * lda;
                    for (std::size_t kx = 0; kx < g.kw; ++kx)
                      taps[ky * g.kw + kx] = a + kx * g.dw * cpad;
                  }
                  q.ukernel[px](cols, core.kgroups, ntaps, taps, lda, core.panel(p),
                                acc + (r * wo + ox0) * n_mid + p * nr, n_mid);
                }
              }
            }
            const std::size_t col0 = p0 * nr, cols = std::min(p1 * nr, n_mid) - col0;
            const QuantizedOperand& qc = *st.qcore;
            dequantize(q, rows * wo, cols, acc + col0, n_mid, &band_q, 0, qc.scale() + col0,
                       qc.wsum() + col0, qc.bias() ? qc.bias() + col0 : nullptr, out + col0, n_mid);
            middle_clamp.apply(rows * wo, cols, out + col0, n_mid);
          });
        };
        auto dest = [&](std::size_t oy0) {
          if (st.qlast) return s.mid;
          return nchw ? s.out : y_img + oy0 * wo * cout;
        };
        auto emit = [&](std::size_t oy0, std::size_t rows, const float* band_out) {
          const float* pixels = band_out;
          if (st.qlast) {
            float* target = nchw ? s.out : y_img + oy0 * wo * cout;
            qd8_gemm(q, rows * wo, band_out, n_mid, *st.qlast, target, cout, clamp, ws_last, true);
            if (!nchw) return;
            pixels = s.out;
          } else if (!nchw) {
            return;  // the middle stage wrote y directly
          }
          blocked_transpose(transpose, pixels, rows * wo, cout, cout, y_img + oy0 * wo, ho * wo);
        };
        std::size_t rows_begin = 0;
        auto prepare = [&](std::size_t begin, std::size_t end, auto) {
          if (!st.qfirst || !nchw) return;
          rows_begin = begin;
          blocked_transpose(transpose, x_img + begin * w, cin, (end - begin) * w, plane,
                            s.pixels_in, cin);
        };
        auto fill = [&](std::size_t iy, float* dst, std::size_t ld) {
          if (st.qfirst) {
            const float* pixels =
                nchw ? s.pixels_in + (iy - rows_begin) * w * cin : x_img + iy * w * cin;
            qd8_gemm(q, w, pixels, cin, *st.qfirst, dst, ld, OutputClamp(), ws_first, true);
          } else if (nchw) {
            blocked_transpose(transpose, x_img + iy * w, cin, w, plane, dst, ld);
          } else {
            std::memcpy(dst, x_img + iy * w * cin, w * cin * sizeof(float));
          }
        };
        conv_image(g, plan, in.h, w, csrc, s, oy_begin, oy_end, prepare, fill, middle, dest, emit);
      });
}

}  // namespace lrk
