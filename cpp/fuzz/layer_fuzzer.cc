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
// Split by concern, one translation unit: fuzz_input.h (the limits, the byte reader of the format
// below, the reports, the value generator), fuzz_reference.h (the double-precision reference
// loops and the workspace estimate), and here the harness proper.
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

#include "fuzz_input.h"
#include "fuzz_reference.h"
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
