// libFuzzer harness of the C++ core (issue 11, "Hardening, round 2"): builds layers of every kind
// of lrk::layer_kinds() from fuzzed sizes, ranks, geometry and values, and calls them.
//
// Built by CMake with -DLRKERNELS_BUILD_FUZZER=ON (clang; -fsanitize=fuzzer,address,undefined),
// run by scripts/fuzz.sh (cpp/fuzz/README.md). A finding is a crash, a sanitizer report, an
// exception other than std::invalid_argument / std::length_error / std::bad_alloc leaving
// create_layer, output_shape or run, a valid call refused, invalid factors or bias accepted, a
// wrong output shape, a non-finite output for finite moderate inputs, (small cases) an output
// that differs from a double-precision loop, or different bits with several threads than with
// one. Every finding aborts with a message on stderr.
//
// Input format, in reading order (bytes past the end read as 0, so any input is valid):
//   kind: index into lrk::layer_kinds() (mod their count)
//   flags: 1 bias, 2 NHWC, 4 linear x is 1-D, 8 switch the ISA between create and run,
//      16 shrunken cache blocking, 32 null x/y when the call is empty, 64 data of a wrong length
//      for one factor, 128 a bias of the wrong shape
//   ISA: index among the available ones (lrk::available_isa_mask())
//   threads: 1 + b % 3
//   values: b % 8; 0-3 finite in [-1, 1] (multiples of 1/8), 4 one inf, 5 one NaN (in a factor
//      or x), 6 magnitudes near 1e30, 7 subnormals
//   value seed
//   shapes: b % 8 == 0 reads every rank dimension independently (rank mismatches), else
//      consistent factors
//   sizes, each one read by Reader::size: a byte below 0xE0 is a small value; 0xE0-0xEF then 2
//      bytes is a 16-bit value; 0xF0-0xFF picks a huge value from kSpecial (near kMaxGeometry,
//      2^32, SIZE_MAX / 4, PTRDIFF_MAX / 4, SIZE_MAX, ...; 0xFF then 8 bytes is any 64-bit value):
//      linear: out, in, rank (then V's rank when independent); convolution: in_channels,
//      out_channels, rank_in, rank_out, kh, kw, stride h/w, padding h/w, dilation h/w (then the
//      independent rank dimensions)
//   flag 64: which factor; flag 128 (with a bias): which wrong shape; flag 16: kc, nc, mc, mb
//   the input: linear: batch (size), ldx byte (below 0xC0: in + b % 4, else a size follows),
//      mismatch byte (b % 16 == 0: a size for x's last dim follows); convolution: n, h, w (sizes),
//      mismatch byte (b % 16 == 0: a size for x's channels follows)
//
// Limits of a case (so that a sane case never trips libFuzzer's -malloc_limit_mb): a factor of
// more than kMaxFactorElements gets a data vector of the wrong length (create_layer must refuse
// it); run() is called only when x and y have at most kMaxBufferBytes each, the convolution's
// per-thread workspace (estimated as in conv_chain.cc's make_scratch) is at most
// kMaxWorkspaceBytes, or beyond kImpossibleBytes (then run must throw, not allocate), and the
// work at most kMaxFlops. output_shape and checked_elements are called for every case.
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "lrkernels/dispatch.h"
#include "lrkernels/gemm.h"
#include "lrkernels/layer.h"
#include "lrkernels/threadpool.h"

// The same sanitizer options for a CI run and for a reproducer run by hand: a request larger than
// memory must reach the library as a null from the allocator (std::bad_alloc), not as a report.
extern "C" const char* __asan_default_options() {
  return "allocator_may_return_null=1:detect_leaks=1:abort_on_error=1";
}
extern "C" const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }

namespace {

using lrk::Factor;
using lrk::Shape;
using u128 = unsigned __int128;

constexpr std::size_t kMaxFactorElements = std::size_t(1) << 18;  // 1 MiB of float32
constexpr std::size_t kMaxBufferBytes = std::size_t(64) << 20;
constexpr std::size_t kMaxWorkspaceBytes = std::size_t(64) << 20;
constexpr u128 kImpossibleBytes = u128(1) << 42;  // above ASan's largest allocation (1 TiB)
constexpr double kMaxFlops = 5e6;                 // 3 threads need >= 1.5e6 (threads_for_flops)
constexpr double kMaxOracleFlops = 1.5e6;  // includes some two-thread cases (threads_for_flops)

constexpr std::size_t kSpecial[16] = {
    0,
    lrk::kMaxGeometry - 1,
    lrk::kMaxGeometry,
    lrk::kMaxGeometry + 1,
    std::size_t(1) << 31,
    std::size_t(1) << 32,
    (std::size_t(1) << 32) + 1,
    SIZE_MAX / 4,
    SIZE_MAX / 4 + 1,
    static_cast<std::size_t>(PTRDIFF_MAX) / 4,
    static_cast<std::size_t>(PTRDIFF_MAX) / 4 - 15,
    SIZE_MAX / 2 + 1,
    SIZE_MAX - 1,
    SIZE_MAX,
    1025,
    0,  // 0xFF: 8 raw bytes instead
};

struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  std::uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::uint64_t raw(int bytes) {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = v << 8 | byte();
    return v;
  }
  // Mostly lo .. lo + span - 1; sometimes 16-bit; sometimes huge.
  std::size_t size(std::size_t lo, std::size_t span) {
    const std::uint8_t b = byte();
    if (b < 0xE0) return lo + b % std::max<std::size_t>(span, 1);
    if (b < 0xF0) return lo + static_cast<std::size_t>(raw(2));
    if (b == 0xFF) return static_cast<std::size_t>(raw(8));
    return kSpecial[b & 15];
  }
};

// LRK_FUZZ_VERBOSE=1: one line per input saying what the case was and how far it went (for
// reading a reproducer).
bool verbose() {
  static const bool on = [] {
    const char* v = std::getenv("LRK_FUZZ_VERBOSE");
    return v != nullptr && v[0] == '1';
  }();
  return on;
}
void note(const std::string& what) {
  if (verbose()) std::fprintf(stderr, "layer_fuzzer: %s\n", what.c_str());
}

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "\nlayer_fuzzer FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Elements of a shape, or none when the product overflows or exceeds `cap`.
bool elements_within(const Shape& s, std::size_t cap, std::size_t* count) {
  u128 c = 1;
  for (std::size_t d : s) {
    c *= d;
    if (c > cap) return false;
  }
  *count = static_cast<std::size_t>(c);
  return true;
}

// Deterministic values: multiples of 1/8 in [-1, 1] (exact products), with the special modes.
struct Values {
  unsigned mode;
  std::uint32_t state;
  // A linear congruential generator: wraps by design (a build with
  // -fsanitize=unsigned-integer-overflow, which reports unchecked size arithmetic, must not stop
  // here).
  __attribute__((no_sanitize("unsigned-integer-overflow"))) float next() {
    state = state * 1664525u + 1013904223u;
    const int q = static_cast<int>((state >> 16) % 17) - 8;
    switch (mode) {
      case 6:
        return static_cast<float>(q) * 1.25e29f;
      case 7:
        return static_cast<float>(q) * 1e-39f;  // subnormal (flushed by the kernels)
      default:
        return static_cast<float>(q) / 8.0f;
    }
  }
  void fill(std::vector<float>& v) {
    for (float& x : v) x = next();
  }
  bool finite_moderate() const { return mode < 4; }
};

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

struct Case {
  const lrk::LayerKind* kind;
  std::vector<Factor> factors;
  std::vector<float> bias;
  bool has_bias;
  lrk::ConvParams params;
  Geometry g{};
};

void require_allowed(const char* where, const std::exception& e) {
  if (dynamic_cast<const std::invalid_argument*>(&e) ||
      dynamic_cast<const std::length_error*>(&e) || dynamic_cast<const std::bad_alloc*>(&e)) {
    return;
  }
  finding(std::string(where) + " threw an exception of another type: " + e.what());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader rd{data, size};
  const auto& kinds = lrk::layer_kinds();
  const lrk::LayerKind& kind = kinds[rd.byte() % kinds.size()];
  const std::string kind_name = kind.name;
  const unsigned flags = rd.byte();
  const bool with_bias = flags & 1, nhwc = flags & 2, one_d = flags & 4, switch_isa = flags & 8,
             shrink_blocking = flags & 16, null_when_empty = flags & 32, wrong_length = flags & 64,
             wrong_bias = flags & 128;

  // ISA among the available ones, threads 1-3.
  std::vector<lrk::Isa> isas;
  const unsigned mask = lrk::available_isa_mask();
  for (int i = 0; i < lrk::kNumIsas; ++i)
    if (mask & (1u << i)) isas.push_back(static_cast<lrk::Isa>(i));
  const std::uint8_t isa_byte = rd.byte();
  lrk::set_active_isa(isas[isa_byte % isas.size()]);
  lrk::set_num_threads(1 + rd.byte() % 3);

  Values values{static_cast<unsigned>(rd.byte() % 8), 0};
  values.state = static_cast<std::uint32_t>(rd.byte() * 2654435761ull + 1);
  const bool independent = rd.byte() % 8 == 0;

  // Factor shapes from the kind's table row: dims named by role so that ranks agree unless
  // `independent`.
  std::vector<Shape> shapes;
  Geometry g{1, 1, 1, 1, 0, 0, 1, 1};
  std::size_t in_dim = 0;
  bool known = true;
  if (!kind.conv) {
    const std::size_t out = rd.size(1, 16), in = rd.size(1, 16), rank = rd.size(1, 8);
    in_dim = in;
    if (kind_name == "LowRankLinear") {
      shapes = {{out, rank}, {independent ? rd.size(1, 8) : rank, in}};
    } else if (kind_name == "Linear") {
      shapes = {{out, in}};
    } else {
      known = false;
    }
  } else {
    const std::size_t cin = rd.size(1, 8), cout = rd.size(1, 8), r1 = rd.size(1, 8),
                      r2 = rd.size(1, 8);
    g.kh = rd.size(1, 5);
    g.kw = rd.size(1, 5);
    g.sh = rd.size(1, 3);
    g.sw = rd.size(1, 3);
    g.ph = rd.size(0, 4);
    g.pw = rd.size(0, 4);
    g.dh = rd.size(1, 3);
    g.dw = rd.size(1, 3);
    in_dim = cin;
    auto dim = [&](std::size_t consistent) { return independent ? rd.size(1, 8) : consistent; };
    if (kind_name == "Conv2d") {
      shapes = {{cout, cin, g.kh, g.kw}};
    } else if (kind_name == "TuckerConv2d") {
      shapes = {{r1, cin}, {r2, dim(r1), g.kh, g.kw}, {cout, dim(r2)}};
    } else if (kind_name == "CPConv2d") {
      shapes = {{r1, cin}, {dim(r1), g.kh}, {dim(r1), g.kw}, {cout, dim(r1)}};
    } else {
      known = false;
    }
  }
  if (!known) {
    // A kind this harness does not know yet (a new row of layer_kinds()): factors of the table's
    // ndim and small dims, create_layer only. Teach the harness its shapes and reference.
    shapes.clear();
    for (const lrk::FactorSpec& spec : kind.factors) {
      Shape twos;
      for (std::size_t d = 0; d < spec.ndim; ++d) twos.push_back(2);
      shapes.push_back(twos);
    }
  }

  // Factors: values for the sane ones; a wrong length for the oversized ones (and on request).
  std::vector<Factor> factors;
  bool factors_sane = true;
  const std::size_t wrong_index = wrong_length ? rd.byte() % shapes.size() : shapes.size();
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    Factor f{"", shapes[i], {}};
    std::size_t count = 0;
    if (elements_within(shapes[i], kMaxFactorElements, &count) && i != wrong_index) {
      f.data.resize(count);
      values.fill(f.data);
    } else {
      f.data.resize(count > 0 ? count - 1 : 1);  // create_layer must refuse it
      factors_sane = false;
    }
    factors.push_back(std::move(f));
  }
  if (values.mode == 4 || values.mode == 5) {  // one inf or NaN in a factor
    Factor& f = factors[values.state % factors.size()];
    if (!f.data.empty()) {
      f.data[(values.state >> 8) % f.data.size()] =
          values.mode == 4 ? INFINITY : std::numeric_limits<float>::quiet_NaN();
    }
  }
  // Linear: U or W lead, (out, ...); convolution: the last factor is (out_channels, ...).
  const std::size_t out_dim = kind.conv ? shapes.back()[0] : shapes.front()[0];
  std::vector<float> bias;
  Shape bias_shape;
  if (with_bias) {
    bias_shape = {out_dim};
    if (out_dim > kMaxFactorElements) {
      bias.resize(1);  // create must refuse the factors first; keep a valid pointer
      factors_sane = false;
    } else {
      if (wrong_bias &&
          out_dim > 0) {  // create must refuse it: (out + 1,), (out - 1,), (out, 1) or ()
        const std::uint8_t b = rd.byte();
        bias_shape = b % 4 == 0   ? Shape{out_dim + 1}
                     : b % 4 == 1 ? Shape{out_dim - 1}
                     : b % 4 == 2 ? Shape{out_dim, 1}
                                  : Shape{};
        factors_sane = false;
      }
      // As many values as the bias shape holds (exactly out_dim when right: ASan sees an
      // over-read).
      std::size_t count = 1;
      for (std::size_t d : bias_shape) count *= d;
      bias.resize(std::max<std::size_t>(count, 1));
      values.fill(bias);
    }
  }
  if (shrink_blocking) {
    lrk::Blocking b;
    b.kc = 1 + rd.byte() % 40;
    b.nc = 1 + rd.byte() % 64;
    b.mc = 1 + rd.byte() % 40;
    b.mb = 1 + rd.byte() % 40;
    lrk::set_blocking_override(b);
  } else {
    lrk::set_blocking_override(lrk::Blocking());
  }

  lrk::ConvParams params;
  params.geometry.sh = g.sh;
  params.geometry.sw = g.sw;
  params.geometry.ph = g.ph;
  params.geometry.pw = g.pw;
  params.geometry.dh = g.dh;
  params.geometry.dw = g.dw;
  params.layout = nhwc ? lrk::Layout::nhwc : lrk::Layout::nchw;

  // The input's shape.
  Shape xs;
  std::size_t ldx = 0;
  if (!kind.conv) {
    const std::size_t batch = rd.size(0, 9);
    const std::uint8_t ldx_byte = rd.byte();
    const std::size_t in_plus_4 = in_dim > SIZE_MAX - 4 ? SIZE_MAX : in_dim + 4;  // no wrap
    ldx =
        ldx_byte < 0xC0 ? std::min(in_plus_4 - 4 + ldx_byte % 4, in_plus_4) : rd.size(0, in_plus_4);
    const std::uint8_t mismatch = rd.byte();
    const std::size_t in = mismatch % 16 == 0 ? rd.size(0, 20) : in_dim;
    xs = one_d ? Shape{in} : Shape{batch, in};
  } else {
    const std::size_t n = rd.size(0, 3);
    std::size_t h = rd.size(1, 12), w = rd.size(1, 12);
    const std::uint8_t mismatch = rd.byte();
    const std::size_t c = mismatch % 16 == 0 ? rd.size(0, 10) : in_dim;
    xs = nhwc ? Shape{n, h, w, c} : Shape{n, c, h, w};
  }

  {
    std::string text = kind_name + " isa " + lrk::isa_name(lrk::active_isa()) + " threads " +
                       std::to_string(lrk::num_threads()) + " values " +
                       std::to_string(values.mode) + " factors";
    for (const Shape& sh : shapes) text += " " + lrk::shape_str(sh);
    if (kind.conv) {
      text += " stride (" + std::to_string(g.sh) + ", " + std::to_string(g.sw) + ") padding (" +
              std::to_string(g.ph) + ", " + std::to_string(g.pw) + ") dilation (" +
              std::to_string(g.dh) + ", " + std::to_string(g.dw) + ")" + (nhwc ? " NHWC" : " NCHW");
    }
    text += " bias " + std::to_string(with_bias) + " x " + lrk::shape_str(xs) + " ldx " +
            std::to_string(ldx);
    note(text);
  }

  // ---- create ----
  std::unique_ptr<lrk::Layer> layer;
  const std::vector<Factor> factors_copy = factors;  // for the reference
  try {
    layer = lrk::create_layer(kind, std::move(factors), with_bias ? bias.data() : nullptr,
                              bias_shape, params);
  } catch (const std::exception& e) {
    require_allowed("create_layer", e);
    note(std::string("create_layer refused: ") + e.what());
    return 0;
  } catch (...) {
    finding("create_layer threw a non-std exception");
  }
  if (!layer) finding("create_layer returned null");
  if (!known) return 0;
  if (!factors_sane) {
    finding(
        "create_layer accepted a factor whose data length does not match its shape, or a "
        "bias of the wrong shape");
  }
  if (layer->kind() != kind_name) finding("layer kind " + layer->kind() + " != " + kind_name);
  if (layer->in_dim() != in_dim || layer->out_dim() != out_dim) {
    finding(kind_name + ": in/out dims " + std::to_string(layer->in_dim()) + "/" +
            std::to_string(layer->out_dim()) + ", expected " + std::to_string(in_dim) + "/" +
            std::to_string(out_dim));
  }

  // ---- output_shape, checked against wide arithmetic ----
  Shape ys;
  try {
    ys = layer->output_shape(xs);
  } catch (const std::exception& e) {
    require_allowed("output_shape", e);
    ys.clear();
  }
  Shape expect;
  if (!kind.conv) {
    if (xs.back() == in_dim) expect = xs.size() == 1 ? Shape{out_dim} : Shape{xs[0], out_dim};
  } else {
    const std::size_t c = xs[nhwc ? 3 : 1], h = xs[nhwc ? 1 : 2], w = xs[nhwc ? 2 : 3];
    bool overflow = false;
    const std::size_t ho = exact_out(h, g.ph, g.dh, g.kh, g.sh, &overflow);
    const std::size_t wo = exact_out(w, g.pw, g.dw, g.kw, g.sw, &overflow);
    // Sides above lrk::kMaxImageSide are refused by contract (layer.h).
    const bool sides_ok = h <= lrk::kMaxImageSide && w <= lrk::kMaxImageSide;
    if (c == in_dim && ho > 0 && wo > 0 && !overflow && sides_ok) {
      expect = nhwc ? Shape{xs[0], ho, wo, out_dim} : Shape{xs[0], out_dim, ho, wo};
    }
  }
  if (ys != expect) {
    finding(kind_name + ": output_shape" + lrk::shape_str(xs) + " = " +
            (ys.empty() ? std::string("error") : lrk::shape_str(ys)) + ", expected " +
            (expect.empty() ? std::string("error") : lrk::shape_str(expect)));
  }
  std::size_t y_elements = 0;
  bool y_ok = false;
  try {
    y_elements = lrk::checked_elements(expect.empty() ? xs : expect, "fuzz");
    y_ok = !expect.empty();
  } catch (const std::exception& e) {
    require_allowed("checked_elements", e);
  }

  // ---- run, when the case is sane in memory and time ----
  std::size_t x_elements = 0;
  if (!kind.conv && xs.size() == 2 && xs[0] > 1) {
    // Rows of ldx elements; the last row needs only `in`.
    const u128 need = u128(xs[0] - 1) * ldx + xs[1];
    if (need > kMaxBufferBytes / 4) return note("not run: x too large"), 0;
    x_elements = static_cast<std::size_t>(need);
  } else if (!elements_within(xs, kMaxBufferBytes / 4, &x_elements)) {
    // Too large to allocate. An empty output (n = 0) still runs, on null pointers.
    if (!(y_ok && y_elements == 0)) return note("not run: x too large"), 0;
    x_elements = 0;
  }
  if (y_ok && y_elements > kMaxBufferBytes / 4) return note("not run: y too large"), 0;

  double flops = 0;
  bool impossible_workspace = false;
  [[maybe_unused]] u128 scratch = 0;  // the caller's per-thread scratch (estimate)
  if (kind.conv && y_ok) {
    const std::size_t h = xs[nhwc ? 1 : 2], w = xs[nhwc ? 2 : 3], n = xs[0];
    const std::size_t ho = expect[nhwc ? 1 : 2], wo = expect[nhwc ? 2 : 3];
    const auto& f = factors_copy;
    std::size_t cin = in_dim, csrc = in_dim, n_mid = 0, cout = out_dim;
    bool first = false, last = false, depthwise = false;
    if (kind_name == "Conv2d") {
      n_mid = f[0].shape[0];
    } else if (kind_name == "TuckerConv2d") {
      first = last = true;
      csrc = f[0].shape[0];
      n_mid = f[1].shape[0];
    } else {
      first = last = depthwise = true;
      csrc = n_mid = f[0].shape[0];
    }
    const u128 ws =
        conv_workspace_bytes(g, h, w, cin, csrc, n_mid, cout, first, last, !nhwc, depthwise);
    if (ws > kMaxWorkspaceBytes && ws < kImpossibleBytes) {
      return note("not run: workspace of " + std::to_string(static_cast<double>(ws)) + " bytes"), 0;
    }
    impossible_workspace = ws >= kImpossibleBytes;
    scratch = ws;
    const double middle = depthwise ? 2.0 * ho * (double(w) * g.kh + double(wo) * g.kw) * csrc
                                    : 2.0 * ho * wo * double(n_mid) * csrc * g.kh * g.kw;
    flops = double(n) * ((first ? 2.0 * double(h) * w * cin * csrc : 0.0) + middle +
                         (last ? 2.0 * double(ho) * wo * n_mid * cout : 0.0));
    // Filling the ring costs time too: a padded row per input row.
    flops += double(n) * double(h) * (double(w) + 2.0 * g.pw) * csrc;
  } else if (!kind.conv) {
    const std::size_t batch = xs.size() == 1 ? 1 : xs[0];
    double k = 0;
    for (const Factor& fa : factors_copy) k += double(fa.shape[0]) * fa.shape[1];
    flops = 2.0 * batch * k;
    if (kind_name == "LowRankLinear") {  // lowrank_gemm's intermediate: <= 40 rows of the rank
      scratch =
          u128(std::min<std::size_t>(batch, 40)) * ((factors_copy[0].shape[1] + 15) / 16 * 16) * 4;
    }
  }
  if (flops > kMaxFlops && !impossible_workspace) {
    return note("not run: " + std::to_string(flops) + " flops"), 0;
  }

  // Never a null pointer for an empty input, as numpy's empty arrays (unless flag 32 asks).
  std::vector<float> x(std::max<std::size_t>(x_elements, 1));
  values.fill(x);
  if ((values.mode == 4 || values.mode == 5) && !x.empty() && (values.state & 1)) {
    x[(values.state >> 4) % x.size()] =
        values.mode == 4 ? -INFINITY : std::numeric_limits<float>::quiet_NaN();
  }
  std::vector<float> y(y_ok ? y_elements : 0, std::numeric_limits<float>::quiet_NaN());
  const bool empty_call = y_ok && y_elements == 0;
  const float* xp = empty_call && null_when_empty ? nullptr : x.data();
  float* yp = (empty_call && null_when_empty) || y.empty() ? nullptr : y.data();

  if (switch_isa) lrk::set_active_isa(isas[(isa_byte / 4 + 1) % isas.size()]);
  bool ran = false;
  try {
    layer->run(xp, xs, ldx, yp);
    ran = true;
  } catch (const std::exception& e) {
    require_allowed("run", e);
    note(std::string("run refused: ") + e.what());
  } catch (...) {
    finding("run threw a non-std exception");
  }
  if (impossible_workspace && ran && !empty_call) {
    finding(kind_name + ": run succeeded with a workspace estimated beyond 4 TiB");
  }
  const bool run_should_succeed =
      y_ok && !impossible_workspace && (kind.conv || xs.size() == 1 || xs[0] <= 1 || ldx >= in_dim);
  if (!ran && run_should_succeed) {
    // Only an allocation failure is an acceptable reason left (all shapes were valid).
    try {
      layer->run(xp, xs, ldx, yp);
    } catch (const std::bad_alloc&) {
      return 0;
    } catch (const std::exception& e) {
      finding(kind_name + ": run of a valid call " + lrk::shape_str(xs) + " -> " +
              lrk::shape_str(expect) + " threw: " + e.what());
    }
  }
  // Work is split over output tiles only, so every thread count must give the same bits
  // (threadpool.h): a run that used the pool is repeated on one thread.
  if (ran && !empty_call && lrk::num_threads() > 1 && flops >= 1e6) {
    const std::size_t threads = lrk::num_threads();
    std::vector<float> y1(y.size(), std::numeric_limits<float>::quiet_NaN());
    lrk::set_num_threads(1);
    try {
      layer->run(xp, xs, ldx, y1.data());
    } catch (const std::exception& e) {
      require_allowed("run on one thread", e);
      y1 = y;  // refused (memory): nothing to compare
    }
    lrk::set_num_threads(threads);
    if (std::memcmp(y1.data(), y.data(), y.size() * sizeof(float)) != 0) {
      std::size_t i = 0;
      while (std::memcmp(&y1[i], &y[i], sizeof(float)) == 0) ++i;
      char text[160];
      std::snprintf(text, sizeof text, "y[%zu] = %.9g with %zu threads, %.9g with one", i,
                    double(y[i]), threads, double(y1[i]));
      finding(kind_name + ": " + text + ", x " + lrk::shape_str(xs) + " -> " +
              lrk::shape_str(expect));
    }
  }
  if (!ran || !values.finite_moderate()) return 0;
  note("ran" + std::string(flops <= kMaxOracleFlops ? ", checked against the reference" : ""));

  // ---- output checks ----
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) {
      finding(kind_name + ": y[" + std::to_string(i) + "] = " + std::to_string(y[i]) +
              " for finite inputs, x " + lrk::shape_str(xs) + " -> " + lrk::shape_str(expect));
    }
  }
  if (flops <= kMaxOracleFlops && !y.empty()) {
    const std::vector<float>* bp = with_bias ? &bias : nullptr;
    const std::vector<double> ref =
        reference(kind_name, factors_copy, bp, x, xs, ldx, nhwc, g, false);
    const std::vector<double> mag =
        reference(kind_name, factors_copy, bp, x, xs, ldx, nhwc, g, true);
    if (ref.size() != y.size()) {
      finding(kind_name + ": reference has " + std::to_string(ref.size()) + " elements, output " +
              std::to_string(y.size()));
    }
    std::size_t terms = 4;
    for (const Factor& fa : factors_copy) {
      std::size_t k = 1;
      for (std::size_t d = 1; d < fa.shape.size(); ++d) k *= fa.shape[d];
      terms += k;
    }
    for (std::size_t i = 0; i < y.size(); ++i) {
      const double bound = 4.0 * double(terms) * 0x1p-24 * mag[i] + 1e-30;
      if (std::fabs(double(y[i]) - ref[i]) > bound) {
        char text[160];
        std::snprintf(text, sizeof text, "y[%zu] = %.9g, reference %.9g (bound %.3g)", i,
                      double(y[i]), ref[i], bound);
        finding(kind_name + ": " + text + ", x " + lrk::shape_str(xs) + " -> " +
                lrk::shape_str(expect));
      }
    }
  }
  return 0;
}
