// The table of layer kinds: each row names a kind's factors and builds its stage chain. A new layer
// kind is a row here (its factors, its rank check, its chain), its reference in
// python/lrkernels/reference.py and its row in python/lrkernels/layer_specs.py.
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "lrkernels/layer.h"

namespace lrk {
namespace {

[[noreturn]] void rank_mismatch(const std::string& text) {
  throw std::invalid_argument("rank mismatch: " + text);
}

void check_bias(const Shape& bias_shape, std::size_t out, const Factor& carrier) {
  if (bias_shape != Shape{out}) {
    throw std::invalid_argument("bias must have shape (" + std::to_string(out) + ",) to match " +
                                carrier.name + " of shape " + shape_str(carrier.shape) +
                                ", got shape " + shape_str(bias_shape));
  }
}

// The chain [factors[first]] -> middle -> [factors[last]] (index -1: no such stage), kernel kh x
// kw. Element addresses survive the move of the vector into the layer, so they are taken first.
std::unique_ptr<Layer> conv_chain(const char* kind, std::vector<Factor> f, const float* bias,
                                  const LayerParams& p, int first, const ConvMiddle& middle,
                                  int last, std::size_t kh, std::size_t kw) {
  ConvGeometry g = p.geometry;
  g.kh = kh;
  g.kw = kw;
  const Factor* first_stage = first >= 0 ? &f[first] : nullptr;
  const Factor* last_stage = last >= 0 ? &f[last] : nullptr;
  return std::make_unique<ConvChain>(kind, std::move(f), bias, first_stage, middle, last_stage, g,
                                     p.layout, p.precision, p.algorithm);
}

std::unique_ptr<Layer> build_lowrank_linear(std::vector<Factor> f, const float* bias,
                                            const LayerParams& p) {
  const Factor &u = f[0], &v = f[1];
  if (u.shape[1] != v.shape[0]) {
    rank_mismatch("U has shape " + shape_str(u.shape) + " (out_features, rank) but V has shape " +
                  shape_str(v.shape) + " (rank, in_features)");
  }
  const std::vector<const Factor*> stages = {&f[1], &f[0]};  // x -> V -> U
  return std::make_unique<LinearChain>("LowRankLinear", std::move(f), bias, stages, p.precision);
}

std::unique_ptr<Layer> build_linear(std::vector<Factor> f, const float* bias,
                                    const LayerParams& p) {
  const std::vector<const Factor*> stages = {&f[0]};
  return std::make_unique<LinearChain>("Linear", std::move(f), bias, stages, p.precision);
}

std::unique_ptr<Layer> build_conv2d(std::vector<Factor> f, const float* bias,
                                    const LayerParams& p) {
  ConvMiddle middle;
  middle.weight = &f[0];
  const std::size_t kh = f[0].shape[2], kw = f[0].shape[3];
  return conv_chain("Conv2d", std::move(f), bias, p, -1, middle, -1, kh, kw);
}

std::unique_ptr<Layer> build_tucker_conv2d(std::vector<Factor> f, const float* bias,
                                           const LayerParams& p) {
  const Factor &first = f[0], &core = f[1], &last = f[2];
  if (core.shape[1] != first.shape[0] || last.shape[1] != core.shape[0]) {
    rank_mismatch("first " + shape_str(first.shape) + " is (R_in, in_channels), core " +
                  shape_str(core.shape) + " must be (R_out, R_in, kh, kw), last " +
                  shape_str(last.shape) + " must be (out_channels, R_out)");
  }
  ConvMiddle middle;
  middle.weight = &f[1];
  const std::size_t kh = core.shape[2], kw = core.shape[3];
  return conv_chain("TuckerConv2d", std::move(f), bias, p, 0, middle, 2, kh, kw);
}

std::unique_ptr<Layer> build_cp_conv2d(std::vector<Factor> f, const float* bias,
                                       const LayerParams& p) {
  const Factor &first = f[0], &vertical = f[1], &horizontal = f[2], &last = f[3];
  const std::size_t r = first.shape[0];
  if (vertical.shape[0] != r || horizontal.shape[0] != r || last.shape[1] != r) {
    rank_mismatch("first " + shape_str(first.shape) + " is (R, in_channels), vertical " +
                  shape_str(vertical.shape) + " must be (R, kh), horizontal " +
                  shape_str(horizontal.shape) + " must be (R, kw), last " + shape_str(last.shape) +
                  " must be (out_channels, R)");
  }
  ConvMiddle middle;
  middle.kind = ConvMiddle::depthwise_hv;
  middle.vertical = &f[1];
  middle.horizontal = &f[2];
  const std::size_t kh = vertical.shape[1], kw = horizontal.shape[1];
  return conv_chain("CPConv2d", std::move(f), bias, p, 0, middle, 3, kh, kw);
}

}  // namespace

const std::vector<LayerKind>& layer_kinds() {
  // The docstrings hold the summary; the parameters and the calling convention are generated
  // from the factors (cpp/bindings/layer_bindings.cc).
  static const std::vector<LayerKind> kinds = {
      {"LowRankLinear",
       false,
       true,
       {{"U", 2, "(out_features, rank)"}, {"V", 2, "(rank, in_features)"}},
       0,
       "(rank,)",
       "Low-rank linear layer y = U (V x) + bias, run as one fused operation.",
       build_lowrank_linear},
      {"Linear",
       false,
       true,
       {{"W", 2, "(out_features, in_features)"}},
       0,
       "()",
       "Dense linear layer y = W x + bias on the same kernels as LowRankLinear (the baseline).",
       build_linear},
      {"Conv2d",
       true,
       true,
       {{"weight", 4, "(out_channels, in_channels, kh, kw)"}},
       0,
       "()",
       "Dense 2-D convolution (groups=1, cross-correlation as in PyTorch) on the lrkernels "
       "engine:\n"
       "the baseline a factorized convolution is compared with.",
       build_conv2d},
      {"TuckerConv2d",
       true,
       true,
       {{"first", 2, "(R_in, in_channels)"},
        {"core", 4, "(R_out, R_in, kh, kw)"},
        {"last", 2, "(out_channels, R_out)"}},
       2,
       "(R_in, R_out)",
       "Tucker-2 factorized convolution run as one fused operation: a 1x1 convolution in_channels\n"
       "-> R_in, a kh x kw core convolution R_in -> R_out with the layer's stride, padding and\n"
       "dilation, and a 1x1 convolution R_out -> out_channels carrying the bias. No full\n"
       "intermediate tensor is written.",
       build_tucker_conv2d},
      {"CPConv2d",
       true,
       false,
       {{"first", 2, "(R, in_channels)"},
        {"vertical", 2, "(R, kh)"},
        {"horizontal", 2, "(R, kw)"},
        {"last", 2, "(out_channels, R)"}},
       3,
       "(R,)",
       "CP-factorized convolution (Lebedev et al. 2015) run as one fused operation: a 1x1\n"
       "convolution in_channels -> R, a kh x 1 depthwise convolution (the H-axis stride, padding\n"
       "and dilation), a 1 x kw depthwise convolution (the W-axis ones) and a 1x1 convolution\n"
       "R -> out_channels with the bias. Equivalent to the dense weight\n"
       "W[o, c, y, x] = sum_r last[o, r] vertical[r, y] horizontal[r, x] first[r, c].",
       build_cp_conv2d},
  };
  return kinds;
}

const LayerKind* find_layer_kind(const std::string& name) {
  for (const LayerKind& k : layer_kinds()) {
    if (name == k.name) return &k;
  }
  return nullptr;
}

std::unique_ptr<Layer> create_layer(const LayerKind& kind, std::vector<Factor> factors,
                                    const float* bias, const Shape& bias_shape,
                                    const LayerParams& params) {
  if (factors.size() != kind.factors.size()) {
    throw std::invalid_argument(std::string(kind.name) + " takes " +
                                std::to_string(kind.factors.size()) + " factors, got " +
                                std::to_string(factors.size()));
  }
  for (std::size_t i = 0; i < factors.size(); ++i) {
    const FactorSpec& spec = kind.factors[i];
    Factor& f = factors[i];
    f.name = spec.name;
    if (f.shape.size() != spec.ndim) {
      throw std::invalid_argument(f.name + " must be " + std::to_string(spec.ndim) + "-D " +
                                  spec.dims + ", got shape " + shape_str(f.shape));
    }
    std::size_t count = 1;
    for (std::size_t d : f.shape) {
      if (d == 0) {
        throw std::invalid_argument(f.name + " must not be empty, got shape " + shape_str(f.shape));
      }
      count = checked_bytes(count, d, "factor");
    }
    if (f.data.size() != count) {
      throw std::invalid_argument(f.name + ": " + std::to_string(f.data.size()) +
                                  " values for shape " + shape_str(f.shape));
    }
  }
  if (bias == nullptr && !bias_shape.empty()) throw std::invalid_argument("bias: null data");
  // The bias belongs to the output: the first dimension of the factor that produces it.
  if (bias != nullptr) {
    const Factor& carrier = factors[kind.bias_factor];
    check_bias(bias_shape, carrier.shape[0], carrier);
  }
  check_output_bounds(params.output_min, params.output_max);
  if (params.precision != Precision::fp32 && !kind.reduced_precision) {
    throw std::invalid_argument(std::string(kind.name) +
                                " supports precision=\"fp32\" only, got \"" +
                                precision_name(params.precision) + "\"");
  }
  check_reduced_precision_weights(kind.name, factors, params.precision);
  std::unique_ptr<Layer> layer = kind.build(std::move(factors), bias, params);
  layer->output_min_ = params.output_min;
  layer->output_max_ = params.output_max;
  return layer;
}

void check_reduced_precision_weights(const char* kind, const std::vector<Factor>& factors,
                                     Precision precision) {
  if (precision == Precision::fp32) return;
  for (const Factor& f : factors) {
    float amax = 0.0f;
    bool finite = true;
    for (float v : f.data) {
      finite = finite && std::isfinite(v);
      amax = std::fabs(v) > amax ? std::fabs(v) : amax;
    }
    // int8: a per-channel scale cannot represent NaN or inf (the quantized row would silently
    // lose it). fp16: values from 65520 up round to inf when stored.
    if (precision == Precision::int8 && !finite) {
      throw std::invalid_argument(std::string(kind) +
                                  ": precision=\"int8\" needs finite weights, " + f.name +
                                  " of shape " + shape_str(f.shape) + " holds NaN or inf");
    }
    if (precision == Precision::fp16 && finite && amax >= 65520.0f) {
      char text[64];
      std::snprintf(text, sizeof text, "%.9g", static_cast<double>(amax));
      throw std::invalid_argument(std::string(kind) + ": precision=\"fp16\": " + f.name +
                                  " of shape " + shape_str(f.shape) + " has |w| = " + text +
                                  ", beyond fp16's range (65504): it would be stored as inf; "
                                  "use precision=\"fp32\" or rescale");
    }
  }
}

void check_output_bounds(float output_min, float output_max) {
  const char* problem = nullptr;
  if (std::isnan(output_min) || std::isnan(output_max)) {
    problem = "the output bounds must not be NaN";
  } else if (output_min > output_max) {
    problem = "output_min must be <= output_max";
  }
  if (problem == nullptr) return;
  char text[128];
  std::snprintf(text, sizeof text, "output_min=%.9g and output_max=%.9g: %s",
                static_cast<double>(output_min), static_cast<double>(output_max), problem);
  throw std::invalid_argument(text);
}

}  // namespace lrk
