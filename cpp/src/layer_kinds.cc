// The table of layer kinds: each row names a kind's factors and builds its stage chain. A new layer
// kind is a row here (its factors, its rank check, its chain), its reference in
// python/lrkernels/reference.py and its row in python/lrkernels/layer_specs.py.
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

ConvGeometry with_kernel(ConvGeometry g, std::size_t kh, std::size_t kw) {
  g.kh = kh;
  g.kw = kw;
  return g;
}

std::unique_ptr<Layer> build_lowrank_linear(std::vector<Factor> f, const float* bias,
                                            const Shape& bias_shape, const ConvParams&) {
  const Factor &u = f[0], &v = f[1];
  if (u.shape[1] != v.shape[0]) {
    rank_mismatch("U has shape " + shape_str(u.shape) + " (out_features, rank) but V has shape " +
                  shape_str(v.shape) + " (rank, in_features)");
  }
  if (bias) check_bias(bias_shape, u.shape[0], u);
  // Element addresses survive the move of the vector into the layer: take them first.
  const std::vector<const Factor*> stages = {&f[1], &f[0]};  // x -> V -> U
  return std::make_unique<LinearChain>("LowRankLinear", std::move(f), bias, stages);
}

std::unique_ptr<Layer> build_linear(std::vector<Factor> f, const float* bias, const Shape& bias_shape,
                                    const ConvParams&) {
  if (bias) check_bias(bias_shape, f[0].shape[0], f[0]);
  const std::vector<const Factor*> stages = {&f[0]};
  return std::make_unique<LinearChain>("Linear", std::move(f), bias, stages);
}

std::unique_ptr<Layer> build_conv2d(std::vector<Factor> f, const float* bias, const Shape& bias_shape,
                                    const ConvParams& p) {
  const Factor& w = f[0];
  if (bias) check_bias(bias_shape, w.shape[0], w);
  const ConvGeometry g = with_kernel(p.geometry, w.shape[2], w.shape[3]);
  ConvMiddle middle;
  middle.kind = ConvMiddle::kxk_conv;
  middle.weight = &f[0];
  return std::make_unique<ConvChain>("Conv2d", std::move(f), bias, nullptr, middle, nullptr, g,
                                     p.layout);
}

std::unique_ptr<Layer> build_tucker_conv2d(std::vector<Factor> f, const float* bias,
                                           const Shape& bias_shape, const ConvParams& p) {
  const Factor &first = f[0], &core = f[1], &last = f[2];
  if (core.shape[1] != first.shape[0] || last.shape[1] != core.shape[0]) {
    rank_mismatch("first " + shape_str(first.shape) + " is (R_in, in_channels), core " +
                  shape_str(core.shape) + " must be (R_out, R_in, kh, kw), last " +
                  shape_str(last.shape) + " must be (out_channels, R_out)");
  }
  if (bias) check_bias(bias_shape, last.shape[0], last);
  const ConvGeometry g = with_kernel(p.geometry, core.shape[2], core.shape[3]);
  ConvMiddle middle;
  middle.kind = ConvMiddle::kxk_conv;
  middle.weight = &f[1];
  const Factor *first_stage = &f[0], *last_stage = &f[2];
  return std::make_unique<ConvChain>("TuckerConv2d", std::move(f), bias, first_stage, middle,
                                     last_stage, g, p.layout);
}

std::unique_ptr<Layer> build_cp_conv2d(std::vector<Factor> f, const float* bias,
                                       const Shape& bias_shape, const ConvParams& p) {
  const Factor &first = f[0], &vertical = f[1], &horizontal = f[2], &last = f[3];
  const std::size_t r = first.shape[0];
  if (vertical.shape[0] != r || horizontal.shape[0] != r || last.shape[1] != r) {
    rank_mismatch("first " + shape_str(first.shape) + " is (R, in_channels), vertical " +
                  shape_str(vertical.shape) + " must be (R, kh), horizontal " +
                  shape_str(horizontal.shape) + " must be (R, kw), last " +
                  shape_str(last.shape) + " must be (out_channels, R)");
  }
  if (bias) check_bias(bias_shape, last.shape[0], last);
  const ConvGeometry g = with_kernel(p.geometry, vertical.shape[1], horizontal.shape[1]);
  ConvMiddle middle;
  middle.kind = ConvMiddle::depthwise_hv;
  middle.vertical = &f[1];
  middle.horizontal = &f[2];
  const Factor *first_stage = &f[0], *last_stage = &f[3];
  return std::make_unique<ConvChain>("CPConv2d", std::move(f), bias, first_stage, middle,
                                     last_stage, g, p.layout);
}

}  // namespace

const std::vector<LayerKind>& layer_kinds() {
  static const std::vector<LayerKind> kinds = {
      {"LowRankLinear", false,
       {{"U", 2, "(out_features, rank)"}, {"V", 2, "(rank, in_features)"}},
       "(rank,)",
       R"doc(Low-rank linear layer y = U (V x) + bias, run as one fused operation.

Parameters
----------
U : array_like, shape (out_features, rank)
V : array_like, shape (rank, in_features)
bias : array_like, shape (out_features,), optional

The weights are converted to float32 and packed once, here, for the active ISA.
Calling the layer with x of shape (in_features,) or (batch, in_features), of any real float
dtype and any strides, returns a new float32 array of shape (out_features,) or
(batch, out_features).
)doc",
       build_lowrank_linear},
      {"Linear", false,
       {{"W", 2, "(out_features, in_features)"}},
       "()",
       R"doc(Dense linear layer y = W x + bias on the same kernels as LowRankLinear (the baseline).

Parameters
----------
W : array_like, shape (out_features, in_features)
bias : array_like, shape (out_features,), optional
)doc",
       build_linear},
      {"Conv2d", true,
       {{"weight", 4, "(out_channels, in_channels, kh, kw)"}},
       "()",
       R"doc(Dense 2-D convolution (groups=1, cross-correlation as in PyTorch) on the lrkernels engine: the
baseline a factorized convolution is compared with, and the kernel that runs the Tucker core.

Parameters
----------
weight : array_like, shape (out_channels, in_channels, kh, kw)
bias : array_like, shape (out_channels,), optional
stride, padding, dilation : int or (int, int)
    Padding is symmetric per axis (rows top and bottom, columns left and right).
layout : "NCHW" or "NHWC"
    Layout of the input and of the returned output.

Calling the layer with x of shape (N, C, H, W) (or (N, H, W, C)), any real float dtype and strides,
returns a new float32 array (N, out_channels, Ho, Wo) (or (N, Ho, Wo, out_channels)).
)doc",
       build_conv2d},
      {"TuckerConv2d", true,
       {{"first", 2, "(R_in, in_channels)"},
        {"core", 4, "(R_out, R_in, kh, kw)"},
        {"last", 2, "(out_channels, R_out)"}},
       "(R_in, R_out)",
       R"doc(Tucker-2 factorized convolution run as one fused operation: a 1x1 convolution in_channels -> R_in,
a kh x kw "core" convolution R_in -> R_out with the layer's stride, padding and dilation, and a 1x1
convolution R_out -> out_channels carrying the bias. No full intermediate tensor is written.

Parameters
----------
first : array_like, shape (R_in, in_channels)
core : array_like, shape (R_out, R_in, kh, kw)
last : array_like, shape (out_channels, R_out)
bias : array_like, shape (out_channels,), optional
stride, padding, dilation : int or (int, int)
layout : "NCHW" or "NHWC"
)doc",
       build_tucker_conv2d},
      {"CPConv2d", true,
       {{"first", 2, "(R, in_channels)"},
        {"vertical", 2, "(R, kh)"},
        {"horizontal", 2, "(R, kw)"},
        {"last", 2, "(out_channels, R)"}},
       "(R,)",
       R"doc(CP-factorized convolution (Lebedev et al. 2015) run as one fused operation: a 1x1 convolution
in_channels -> R, a kh x 1 depthwise convolution (the H-axis stride, padding and dilation), a
1 x kw depthwise convolution (the W-axis ones) and a 1x1 convolution R -> out_channels with the bias.
Equivalent to the dense weight W[o, c, y, x] = sum_r last[o, r] vertical[r, y] horizontal[r, x] first[r, c].

Parameters
----------
first : array_like, shape (R, in_channels)
vertical : array_like, shape (R, kh)
horizontal : array_like, shape (R, kw)
last : array_like, shape (out_channels, R)
bias : array_like, shape (out_channels,), optional
stride, padding, dilation : int or (int, int)
layout : "NCHW" or "NHWC"
)doc",
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
                                    const ConvParams& params) {
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
  return kind.build(std::move(factors), bias, bias_shape, params);
}

}  // namespace lrk
