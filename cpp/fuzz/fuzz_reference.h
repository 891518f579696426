// The libFuzzer harness's double-precision reference (included by layer_fuzzer.cc only): the
// exact output sizes, the reference loops of every layer kind (small cases) and the convolution
// workspace estimate that bounds which calls are run.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz_input.h"
#include "lrkernels/layer.h"

namespace {

// ---- the double-precision reference (small cases) ------------------------------------------------
// Neither coverage-instrumented nor sanitized: its loops are the harness's, not the library's, and
// libFuzzer's comparison hooks and the sanitizer checks there made a checked case ~30x slower.
#define LRK_FUZZ_NO_COVERAGE __attribute__((no_sanitize("coverage", "address", "undefined")))

struct Geometry {
  std::size_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// Exact output size (wide arithmetic), 0 when the kernel does not fit; *overflow when it does not
// fit in a size_t (then output_shape must refuse the call).
std::size_t exact_out(std::size_t in, std::size_t pad, std::size_t dil, std::size_t k,
                      std::size_t stride, bool* overflow = nullptr) {
  const u128 span = u128(dil) * (k - 1) + 1;
  const u128 padded = u128(in) + 2 * u128(pad);
  if (padded < span) return 0;
  const u128 out = (padded - span) / stride + 1;
  if (out > SIZE_MAX) {
    if (overflow) *overflow = true;
    return SIZE_MAX;
  }
  return static_cast<std::size_t>(out);
}

// Known findings the harness steps around so that fuzzing goes on, until they are fixed; with
// LRK_FUZZ_STRICT=1 in the environment they are checked too (to verify a fix). None at present
// (F1 and F2 are fixed: their reproducers are in the corpus).
[[maybe_unused]] bool strict() {
  static const bool on = [] {
    const char* v = std::getenv("LRK_FUZZ_STRICT");
    return v != nullptr && v[0] == '1';
  }();
  return on;
}

// x (c, h, w) padded with zeros: value at (ch, iy, ix) for signed coordinates.
struct Planes {
  std::size_t c, h, w;
  std::vector<double> v;  // (c, h, w)
  LRK_FUZZ_NO_COVERAGE double at(std::size_t ch, long iy, long ix) const {
    if (iy < 0 || ix < 0 || iy >= static_cast<long>(h) || ix >= static_cast<long>(w)) return 0.0;
    return v[(ch * h + static_cast<std::size_t>(iy)) * w + static_cast<std::size_t>(ix)];
  }
};

// out (rows, ...) = m (rows, c) applied per pixel (1x1 convolution).
LRK_FUZZ_NO_COVERAGE Planes pointwise(const std::vector<double>& m, std::size_t rows,
                                      const Planes& x) {
  Planes out{rows, x.h, x.w, std::vector<double>(rows * x.h * x.w, 0.0)};
  const std::size_t px = x.h * x.w;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t ch = 0; ch < x.c; ++ch)
      for (std::size_t p = 0; p < px; ++p) out.v[r * px + p] += m[r * x.c + ch] * x.v[ch * px + p];
  return out;
}

// Dense kxk cross-correlation: w (n, c, kh, kw).
LRK_FUZZ_NO_COVERAGE Planes conv_kxk(const std::vector<double>& wt, std::size_t n, const Planes& x,
                                     const Geometry& g) {
  const std::size_t ho = exact_out(x.h, g.ph, g.dh, g.kh, g.sh);
  const std::size_t wo = exact_out(x.w, g.pw, g.dw, g.kw, g.sw);
  Planes out{n, ho, wo, std::vector<double>(n * ho * wo, 0.0)};
  for (std::size_t o = 0; o < n; ++o)
    for (std::size_t oy = 0; oy < ho; ++oy)
      for (std::size_t ox = 0; ox < wo; ++ox) {
        double s = 0.0;
        for (std::size_t ch = 0; ch < x.c; ++ch)
          for (std::size_t ky = 0; ky < g.kh; ++ky)
            for (std::size_t kx = 0; kx < g.kw; ++kx) {
              const long iy = static_cast<long>(oy * g.sh + ky * g.dh) - static_cast<long>(g.ph);
              const long ix = static_cast<long>(ox * g.sw + kx * g.dw) - static_cast<long>(g.pw);
              s += wt[((o * x.c + ch) * g.kh + ky) * g.kw + kx] * x.at(ch, iy, ix);
            }
        out.v[(o * ho + oy) * wo + ox] = s;
      }
  return out;
}

// CP middle: kh x 1 depthwise (H stride, padding, dilation), then 1 x kw (W ones).
LRK_FUZZ_NO_COVERAGE Planes conv_depthwise_hv(const std::vector<double>& vert,
                                              const std::vector<double>& horiz, const Planes& x,
                                              const Geometry& g) {
  const std::size_t ho = exact_out(x.h, g.ph, g.dh, g.kh, g.sh);
  const std::size_t wo = exact_out(x.w, g.pw, g.dw, g.kw, g.sw);
  Planes v{x.c, ho, x.w, std::vector<double>(x.c * ho * x.w, 0.0)};
  for (std::size_t r = 0; r < x.c; ++r)
    for (std::size_t oy = 0; oy < ho; ++oy)
      for (std::size_t ix = 0; ix < x.w; ++ix) {
        double s = 0.0;
        for (std::size_t ky = 0; ky < g.kh; ++ky) {
          const long iy = static_cast<long>(oy * g.sh + ky * g.dh) - static_cast<long>(g.ph);
          s += vert[r * g.kh + ky] * x.at(r, iy, static_cast<long>(ix));
        }
        v.v[(r * ho + oy) * x.w + ix] = s;
      }
  Planes out{x.c, ho, wo, std::vector<double>(x.c * ho * wo, 0.0)};
  for (std::size_t r = 0; r < x.c; ++r)
    for (std::size_t oy = 0; oy < ho; ++oy)
      for (std::size_t ox = 0; ox < wo; ++ox) {
        double s = 0.0;
        for (std::size_t kx = 0; kx < g.kw; ++kx) {
          const long ix = static_cast<long>(ox * g.sw + kx * g.dw) - static_cast<long>(g.pw);
          s += horiz[r * g.kw + kx] * v.at(r, static_cast<long>(oy), ix);
        }
        out.v[(r * ho + oy) * wo + ox] = s;
      }
  return out;
}

LRK_FUZZ_NO_COVERAGE std::vector<double> to_double(const std::vector<float>& v, bool absolute) {
  std::vector<double> d(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) d[i] = absolute ? std::fabs(double(v[i])) : v[i];
  return d;
}

// The layer's output in its own layout (conv: NCHW or NHWC), in double; absolute: |everything|,
// the magnitude that bounds the rounding error.
LRK_FUZZ_NO_COVERAGE std::vector<double> reference(const std::string& kind,
                                                   const std::vector<Factor>& f,
                                                   const std::vector<float>* bias,
                                                   const std::vector<float>& x, const Shape& xs,
                                                   std::size_t ldx, bool nhwc, const Geometry& g,
                                                   bool absolute) {
  std::vector<std::vector<double>> w;
  for (const Factor& fa : f) w.push_back(to_double(fa.data, absolute));
  std::vector<double> b;
  if (bias) b = to_double(*bias, absolute);
  std::vector<double> y;
  if (kind == "Linear" || kind == "LowRankLinear") {
    const bool lowrank = kind == "LowRankLinear";
    const std::size_t batch = xs.size() == 1 ? 1 : xs[0], in = xs.back();
    const std::size_t out = f[0].shape[0];
    for (std::size_t m = 0; m < batch; ++m) {
      std::vector<double> xr(in);
      for (std::size_t k = 0; k < in; ++k) {
        xr[k] = absolute ? std::fabs(double(x[m * ldx + k])) : double(x[m * ldx + k]);
      }
      if (lowrank) {  // t = V x
        const std::size_t rank = f[1].shape[0];
        std::vector<double> t(rank, 0.0);
        for (std::size_t r = 0; r < rank; ++r)
          for (std::size_t k = 0; k < in; ++k) t[r] += w[1][r * in + k] * xr[k];
        xr = t;
      }
      const std::size_t kdim = xr.size();
      for (std::size_t o = 0; o < out; ++o) {
        double s = b.empty() ? 0.0 : b[o];
        for (std::size_t k = 0; k < kdim; ++k) s += w[0][o * kdim + k] * xr[k];
        y.push_back(s);
      }
    }
    return y;
  }
  const std::size_t n = xs[0], c = xs[nhwc ? 3 : 1], h = xs[nhwc ? 1 : 2], wd = xs[nhwc ? 2 : 3];
  for (std::size_t img = 0; img < n; ++img) {
    Planes p{c, h, wd, std::vector<double>(c * h * wd)};
    for (std::size_t ch = 0; ch < c; ++ch)
      for (std::size_t iy = 0; iy < h; ++iy)
        for (std::size_t ix = 0; ix < wd; ++ix) {
          const std::size_t i =
              nhwc ? ((img * h + iy) * wd + ix) * c + ch : ((img * c + ch) * h + iy) * wd + ix;
          p.v[(ch * h + iy) * wd + ix] = absolute ? std::fabs(double(x[i])) : double(x[i]);
        }
    Planes out;
    if (kind == "Conv2d") {
      out = conv_kxk(w[0], f[0].shape[0], p, g);
    } else if (kind == "TuckerConv2d") {
      out = pointwise(w[2], f[2].shape[0],
                      conv_kxk(w[1], f[1].shape[0], pointwise(w[0], f[0].shape[0], p), g));
    } else if (kind == "CPConv2d") {
      out = pointwise(w[3], f[3].shape[0],
                      conv_depthwise_hv(w[1], w[2], pointwise(w[0], f[0].shape[0], p), g));
    } else {
      finding("the harness has no reference for layer kind " + kind);
    }
    const std::size_t px = out.h * out.w;
    std::vector<double> img_out(out.c * px);
    for (std::size_t o = 0; o < out.c; ++o)
      for (std::size_t q = 0; q < px; ++q) {
        const double v = out.v[o * px + q] + (b.empty() ? 0.0 : b[o]);
        img_out[nhwc ? q * out.c + o : o * px + q] = v;
      }
    y.insert(y.end(), img_out.begin(), img_out.end());
  }
  return y;
}

// Per-thread workspace of a convolution call, in bytes, as conv_chain.cc's make_scratch and
// run_stages size it (saturating, wide arithmetic).
u128 conv_workspace_bytes(const Geometry& g, std::size_t h, std::size_t w, std::size_t cin,
                          std::size_t csrc, std::size_t n_mid, std::size_t cout, bool first,
                          bool last, bool nchw, bool depthwise) {
  const std::size_t ho = exact_out(h, g.ph, g.dh, g.kh, g.sh);
  const std::size_t wo = exact_out(w, g.pw, g.dw, g.kw, g.sw);
  if (ho == 0 || wo == 0) return 0;
  const u128 band = std::max<u128>(1, std::min<u128>(ho, (96 + u128(wo) - 1) / wo));
  const u128 ring = u128(g.kh - 1) * g.dh + 1 + (band - 1) * g.sh;
  const u128 wp = u128(w) + 2 * u128(g.pw);
  auto sat = [](u128 a, u128 b) -> u128 {
    if (a != 0 && b > kImpossibleBytes / a) return kImpossibleBytes;
    return a * b;
  };
  u128 floats = sat(sat(ring, wp), csrc) + sat(wp, csrc) +
                sat(sat(ring, w), first && nchw ? cin : 0) + sat(sat(band, wo), last ? n_mid : 0) +
                sat(sat(band, wo), nchw ? cout : 0) + sat(band, g.kh) * 2 + 16 * 8;
  if (depthwise) floats += sat(wp, csrc) + 16 + 2 * u128(g.kw);
  return sat(floats, 4);
}

}  // namespace
