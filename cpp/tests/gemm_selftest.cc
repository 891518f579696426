// Standalone check of every layer kind (lrk::layer_kinds(): LowRankLinear, Linear, Conv2d,
// TuckerConv2d, CPConv2d), created through lrk::create_layer and run on every available ISA
// (lrk::set_active_isa), against double-precision loops, without Python: runs under qemu on a
// cross build (ctest), and under sanitizers. Small shapes, default and shrunken cache blocking.
// The kernels themselves are tested one by one in ukernel_tester.cc.
// Exit status 0 when all cases pass.
#include <cmath>
#include <cstdio>
#include <exception>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "lrkernels/dispatch.h"
#include "lrkernels/gemm.h"
#include "lrkernels/layer.h"
#include "ukernel_tester.h"

namespace {

using lrk::Factor;
using lrk::Shape;

std::mt19937 g_gen(42);
int g_cases = 0, g_failures = 0;
std::set<std::string> g_kinds_run;  // every kind of lrk::layer_kinds() must have cases here

Factor factor(Shape shape) {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return Factor{"", shape, lrk_test::random_floats(g_gen, n)};
}

void report(const char* kind, bool ok, const std::string& what) {
  g_kinds_run.insert(kind);
  ++g_cases;
  if (!ok && ++g_failures <= 20) std::printf("FAIL %s\n", what.c_str());
}

// Compares y (float) with ref; mag and terms give the elementwise bound (ukernel_tester.h).
bool close(const std::vector<float>& y, const std::vector<double>& ref,
           const std::vector<double>& mag, std::size_t terms, std::string* where) {
  if (y.size() != ref.size()) {
    *where = "output has " + std::to_string(y.size()) + " elements, expected " +
             std::to_string(ref.size());
    return false;
  }
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (!lrk_test::within_bound(y[i], ref[i], mag[i], terms)) {
      char text[128];
      std::snprintf(text, sizeof text, "y[%zu] = %.9g, expected %.9g", i, double(y[i]), ref[i]);
      *where = text;
      return false;
    }
  }
  return true;
}

// ---- linear layers: y = x Wd^T + b, Wd = W or U V -----------------------------------------------

struct LinearCase {
  std::size_t in, out, rank, batch, ldx;  // rank 0: Linear
  bool bias, one_d;                       // one_d: x of shape (in,)
};

void run_linear(const LinearCase& lc, const std::string& tag) {
  const bool lowrank = lc.rank > 0;
  std::vector<Factor> factors;
  if (lowrank) {
    factors.push_back(factor({lc.out, lc.rank}));
    factors.push_back(factor({lc.rank, lc.in}));
  } else {
    factors.push_back(factor({lc.out, lc.in}));
  }
  // The dense weight and its magnitude (|U| |V|), in double.
  std::vector<double> wd(lc.out * lc.in), wa(lc.out * lc.in);
  for (std::size_t o = 0; o < lc.out; ++o) {
    for (std::size_t k = 0; k < lc.in; ++k) {
      if (!lowrank) {
        wd[o * lc.in + k] = factors[0].data[o * lc.in + k];
        wa[o * lc.in + k] = std::fabs(wd[o * lc.in + k]);
        continue;
      }
      for (std::size_t r = 0; r < lc.rank; ++r) {
        const double p = double(factors[0].data[o * lc.rank + r]) * factors[1].data[r * lc.in + k];
        wd[o * lc.in + k] += p;
        wa[o * lc.in + k] += std::fabs(p);
      }
    }
  }
  const std::vector<float> bias = lrk_test::random_floats(g_gen, lc.out);
  const std::vector<float> x = lrk_test::random_floats(g_gen, lc.batch * lc.ldx);
  const char* kind_name = lowrank ? "LowRankLinear" : "Linear";
  char what[200];
  std::snprintf(what, sizeof what, "%s %s in=%zu out=%zu rank=%zu batch=%zu ldx=%zu bias=%d x=%s",
                tag.c_str(), kind_name, lc.in, lc.out, lc.rank, lc.batch, lc.ldx, int(lc.bias),
                lc.one_d ? "1-D" : "2-D");
  try {
    auto layer =
        lrk::create_layer(*lrk::find_layer_kind(kind_name), factors,
                          lc.bias ? bias.data() : nullptr, lc.bias ? Shape{lc.out} : Shape{});
    const Shape x_shape = lc.one_d ? Shape{lc.in} : Shape{lc.batch, lc.in};
    std::vector<float> y(lc.batch * lc.out, NAN);
    layer->run(x.data(), x_shape, lc.ldx, y.data());
    std::vector<double> ref(y.size()), mag(y.size());
    for (std::size_t m = 0; m < lc.batch; ++m) {
      for (std::size_t o = 0; o < lc.out; ++o) {
        double s = lc.bias ? bias[o] : 0.0, sa = std::fabs(s);
        for (std::size_t k = 0; k < lc.in; ++k) {
          s += wd[o * lc.in + k] * x[m * lc.ldx + k];
          sa += wa[o * lc.in + k] * std::fabs(x[m * lc.ldx + k]);
        }
        ref[m * lc.out + o] = s;
        mag[m * lc.out + o] = sa;
      }
    }
    std::string where;
    bool ok = close(y, ref, mag, lc.in + lc.rank, &where);
    if (ok && lc.batch > 0 && lrk::last_used_isa() != int(lrk::active_isa())) {
      ok = false;
      where = "ran on ISA " + std::to_string(lrk::last_used_isa());
    }
    report(kind_name, ok, std::string(what) + ": " + where);
  } catch (const std::exception& e) {
    report(kind_name, false, std::string(what) + ": threw " + e.what());
  }
}

// ---- convolutions: every kind against the dense weight it stands for ------------------------------

struct Geometry {
  std::size_t kh, kw, sh, sw, ph, pw, dh, dw;
};

struct ConvCase {
  const char* kind;                     // Conv2d, TuckerConv2d, CPConv2d
  std::size_t n, c, h, w, out, r1, r2;  // r1, r2: R_in, R_out (Tucker) or R (CP, r1)
  Geometry g;
  lrk::Layout layout;
  bool bias;
};

void run_conv(const ConvCase& cc, const std::string& tag) {
  const Geometry& g = cc.g;
  const std::string kind = cc.kind;
  std::vector<Factor> factors;
  std::size_t chain_terms = 0;
  if (kind == "Conv2d") {
    factors.push_back(factor({cc.out, cc.c, g.kh, g.kw}));
    chain_terms = cc.c * g.kh * g.kw;
  } else if (kind == "TuckerConv2d") {
    factors.push_back(factor({cc.r1, cc.c}));
    factors.push_back(factor({cc.r2, cc.r1, g.kh, g.kw}));
    factors.push_back(factor({cc.out, cc.r2}));
    chain_terms = cc.c + cc.r1 * g.kh * g.kw + cc.r2;
  } else {
    factors.push_back(factor({cc.r1, cc.c}));
    factors.push_back(factor({cc.r1, g.kh}));
    factors.push_back(factor({cc.r1, g.kw}));
    factors.push_back(factor({cc.out, cc.r1}));
    chain_terms = cc.c + g.kh + g.kw + cc.r1;
  }
  // Dense weight wd[o][c][y][x] and its magnitude, in double.
  const std::size_t taps = g.kh * g.kw;
  std::vector<double> wd(cc.out * cc.c * taps), wa(wd.size());
  for (std::size_t o = 0; o < cc.out; ++o) {
    for (std::size_t c = 0; c < cc.c; ++c) {
      for (std::size_t t = 0; t < taps; ++t) {
        const std::size_t ky = t / g.kw, kx = t % g.kw, at = (o * cc.c + c) * taps + t;
        if (kind == "Conv2d") {
          wd[at] = factors[0].data[at];
          wa[at] = std::fabs(wd[at]);
        } else if (kind == "TuckerConv2d") {
          const auto &first = factors[0].data, &core = factors[1].data, &last = factors[2].data;
          for (std::size_t ro = 0; ro < cc.r2; ++ro) {
            for (std::size_t ri = 0; ri < cc.r1; ++ri) {
              const double p = double(last[o * cc.r2 + ro]) * core[(ro * cc.r1 + ri) * taps + t] *
                               first[ri * cc.c + c];
              wd[at] += p;
              wa[at] += std::fabs(p);
            }
          }
        } else {
          const auto &first = factors[0].data, &vert = factors[1].data, &hor = factors[2].data,
                     &last = factors[3].data;
          for (std::size_t r = 0; r < cc.r1; ++r) {
            const double p = double(last[o * cc.r1 + r]) * vert[r * g.kh + ky] *
                             hor[r * g.kw + kx] * first[r * cc.c + c];
            wd[at] += p;
            wa[at] += std::fabs(p);
          }
        }
      }
    }
  }
  const bool nchw = cc.layout == lrk::Layout::nchw;
  const std::vector<float> bias = lrk_test::random_floats(g_gen, cc.out);
  const std::vector<float> x = lrk_test::random_floats(g_gen, cc.n * cc.c * cc.h * cc.w);
  auto x_at = [&](std::size_t n, std::size_t c, std::size_t y, std::size_t xx) {
    return nchw ? x[((n * cc.c + c) * cc.h + y) * cc.w + xx]
                : x[((n * cc.h + y) * cc.w + xx) * cc.c + c];
  };
  char what[240];
  std::snprintf(what, sizeof what,
                "%s %s n=%zu c=%zu h=%zu w=%zu out=%zu ranks=(%zu,%zu) k=%zux%zu s=%zux%zu "
                "p=%zux%zu d=%zux%zu %s bias=%d",
                tag.c_str(), cc.kind, cc.n, cc.c, cc.h, cc.w, cc.out, cc.r1, cc.r2, g.kh, g.kw,
                g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, lrk::layout_name(cc.layout), int(cc.bias));
  try {
    lrk::ConvParams params;
    params.geometry.sh = g.sh, params.geometry.sw = g.sw;
    params.geometry.ph = g.ph, params.geometry.pw = g.pw;
    params.geometry.dh = g.dh, params.geometry.dw = g.dw;
    params.layout = cc.layout;
    auto layer =
        lrk::create_layer(*lrk::find_layer_kind(kind), factors, cc.bias ? bias.data() : nullptr,
                          cc.bias ? Shape{cc.out} : Shape{}, params);
    const Shape x_shape = nchw ? Shape{cc.n, cc.c, cc.h, cc.w} : Shape{cc.n, cc.h, cc.w, cc.c};
    const Shape y_shape = layer->output_shape(x_shape);
    const std::size_t ho = nchw ? y_shape[2] : y_shape[1], wo = nchw ? y_shape[3] : y_shape[2];
    std::vector<float> y(cc.n * cc.out * ho * wo, NAN);
    layer->run(x.data(), x_shape, 0, y.data());
    std::vector<double> ref(y.size()), mag(y.size());
    for (std::size_t n = 0; n < cc.n; ++n) {
      for (std::size_t o = 0; o < cc.out; ++o) {
        for (std::size_t oy = 0; oy < ho; ++oy) {
          for (std::size_t ox = 0; ox < wo; ++ox) {
            double s = cc.bias ? bias[o] : 0.0, sa = std::fabs(s);
            for (std::size_t c = 0; c < cc.c; ++c) {
              for (std::size_t ky = 0; ky < g.kh; ++ky) {
                const long iy = long(oy * g.sh + ky * g.dh) - long(g.ph);
                if (iy < 0 || iy >= long(cc.h)) continue;
                for (std::size_t kx = 0; kx < g.kw; ++kx) {
                  const long ix = long(ox * g.sw + kx * g.dw) - long(g.pw);
                  if (ix < 0 || ix >= long(cc.w)) continue;
                  const std::size_t at = (o * cc.c + c) * taps + ky * g.kw + kx;
                  const double xv = x_at(n, c, std::size_t(iy), std::size_t(ix));
                  s += wd[at] * xv;
                  sa += wa[at] * std::fabs(xv);
                }
              }
            }
            const std::size_t yi = nchw ? ((n * cc.out + o) * ho + oy) * wo + ox
                                        : ((n * ho + oy) * wo + ox) * cc.out + o;
            ref[yi] = s;
            mag[yi] = sa;
          }
        }
      }
    }
    std::string where;
    bool ok = close(y, ref, mag, chain_terms, &where);
    if (ok && lrk::last_used_isa() != int(lrk::active_isa())) {
      ok = false;
      where = "ran on ISA " + std::to_string(lrk::last_used_isa());
    }
    report(cc.kind, ok, std::string(what) + ": " + where);
  } catch (const std::exception& e) {
    report(cc.kind, false, std::string(what) + ": threw " + e.what());
  }
}

void run_all(const std::string& tag) {
  const LinearCase linear[] = {{5, 7, 0, 3, 5, true, false},     {17, 33, 0, 9, 20, false, false},
                               {64, 9, 0, 1, 64, true, true},    {5, 7, 3, 3, 5, true, false},
                               {17, 33, 8, 13, 19, true, false}, {64, 9, 17, 2, 64, false, false},
                               {3, 40, 1, 0, 3, true, false},    {33, 65, 16, 1, 33, true, true},
                               {40, 17, 5, 17, 41, false, false}};
  for (const LinearCase& lc : linear) run_linear(lc, tag);

  const Geometry geometries[] = {
      {3, 3, 1, 1, 1, 1, 1, 1},  // same-size 3x3
      {3, 2, 2, 1, 1, 0, 1, 2},  // strided, dilated, asymmetric kernel
      {1, 1, 1, 1, 0, 0, 1, 1},  // pointwise
      {5, 3, 1, 2, 2, 1, 1, 1},
  };
  const char* kinds[] = {"Conv2d", "TuckerConv2d", "CPConv2d"};
  for (const char* kind : kinds) {
    for (const Geometry& g : geometries) {
      for (int layout = 0; layout < 2; ++layout) {
        const auto l = layout ? lrk::Layout::nhwc : lrk::Layout::nchw;
        run_conv(ConvCase{kind, 2, 3, 7, 6, 5, 2, 4, g, l, true}, tag);
        run_conv(ConvCase{kind, 1, 17, 5, 9, 33, 9, 16, g, l, layout == 0}, tag);
      }
    }
    run_conv(ConvCase{kind, 1, 4, 2, 3, 3, 3, 2, geometries[0], lrk::Layout::nchw, true}, tag);
  }
}

}  // namespace

int main() {
  for (int isa_index = 0; isa_index < lrk::kNumIsas; ++isa_index) {
    const auto isa = static_cast<lrk::Isa>(isa_index);
    if (!(lrk::available_isa_mask() & (1u << isa_index))) continue;
    lrk::set_active_isa(isa);
    const int before = g_cases, failed_before = g_failures;
    for (int blocked = 0; blocked < 2; ++blocked) {
      lrk::Blocking b;
      if (blocked) b.kc = 5, b.nc = 1, b.mc = 1, b.mb = 1;  // rounded up to one tile
      lrk::set_blocking_override(b);
      run_all(std::string("isa=") + lrk::isa_name(isa) + (blocked ? " blocked" : ""));
    }
    std::printf("isa %-7s %d layer cases, %d failed\n", lrk::isa_name(isa), g_cases - before,
                g_failures - failed_before);
  }
  lrk::set_blocking_override(lrk::Blocking());
  for (const lrk::LayerKind& kind : lrk::layer_kinds()) {
    if (!g_kinds_run.count(kind.name)) {
      ++g_failures;
      std::printf("FAIL layer kind %s has no case in this self-test\n", kind.name);
    }
  }
  std::printf("%d passed, %d failed\n", g_cases - g_failures, g_failures);
  return g_cases > 0 && g_failures == 0 ? 0 : 1;
}
