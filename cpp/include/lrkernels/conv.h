// Convolutions on the GEMM engine: the dense Conv2d and the fused Tucker-2 convolution.
//
// Both are computed one output row at a time from a ring buffer of zero-padded NHWC source rows:
// the kxk stage is an implicit GEMM (per kernel tap, the micro-kernel reads a strided run of source
// pixels in place, accumulating in its registers' tile), never an im2col buffer. For Tucker-2 the
// source rows are the 1x1 stage's output (R_in channels), computed once per input row into the ring
// (no halo recomputation), and each core output row (R_out channels) goes straight through the last
// 1x1 stage: no intermediate tensor larger than a few rows is ever written.
#pragma once

#include <cstddef>
#include <vector>

#include "lrkernels/layers.h"

namespace lrk {

enum class Layout { nchw, nhwc };

struct ConvGeometry {
  std::size_t kh = 1, kw = 1;  // kernel
  std::size_t sh = 1, sw = 1;  // stride (>= 1)
  std::size_t ph = 0, pw = 0;  // symmetric zero padding per axis
  std::size_t dh = 1, dw = 1;  // dilation (>= 1)
  // Output size for an h x w input; 0 when the kernel does not fit.
  std::size_t out_h(std::size_t h) const;
  std::size_t out_w(std::size_t w) const;
};

// Shape of one call: x is (n, c, h, w) for NCHW or (n, h, w, c) for NHWC, contiguous float32.
struct ConvInput {
  const float* x = nullptr;
  std::size_t n = 0, c = 0, h = 0, w = 0;
  Layout layout = Layout::nchw;
};

// Dense convolution, groups = 1. weight (cout, cin, kh, kw) row-major.
class Conv2dLayer {
 public:
  Conv2dLayer(const float* weight, std::size_t cout, std::size_t cin, const float* bias,
              const ConvGeometry& g);
  std::size_t in_channels() const { return cin_; }
  std::size_t out_channels() const { return w_.n(); }
  const ConvGeometry& geometry() const { return g_; }
  const float* weight() const { return weight_.data(); }  // (cout, cin, kh, kw)
  const float* bias() const { return w_.bias(); }
  // y: (n, cout, ho, wo) or (n, ho, wo, cout) in the input's layout, contiguous.
  void forward(const ConvInput& in, float* y) const;

 private:
  std::size_t cin_;
  ConvGeometry g_;
  std::vector<float> weight_;
  WeightOperand w_;  // (cout, kh * kw * cin), K ordered (ky, kx, c) to match NHWC source rows
};

// Tucker-2: 1x1 (cin -> r_in), kxk core (r_in -> r_out, geometry g), 1x1 (r_out -> cout) + bias.
class TuckerConv2dLayer {
 public:
  TuckerConv2dLayer(const float* first, std::size_t r_in, std::size_t cin, const float* core,
                    std::size_t r_out, const float* last, std::size_t cout, const float* bias,
                    const ConvGeometry& g);
  std::size_t in_channels() const { return first_.k(); }
  std::size_t out_channels() const { return last_.n(); }
  std::size_t rank_in() const { return first_.n(); }
  std::size_t rank_out() const { return last_.k(); }
  const ConvGeometry& geometry() const { return g_; }
  const float* first() const { return first_.weights(); }
  const float* core() const { return core_weight_.data(); }  // (r_out, r_in, kh, kw)
  const float* last() const { return last_.weights(); }
  const float* bias() const { return last_.bias(); }
  void forward(const ConvInput& in, float* y) const;

 private:
  ConvGeometry g_;
  std::vector<float> core_weight_;
  WeightOperand first_;  // (r_in, cin)
  WeightOperand core_;   // (r_out, kh * kw * r_in), K ordered (ky, kx, c)
  WeightOperand last_;   // (cout, r_out), carries the bias
};

// CP (Lebedev et al. 2015): 1x1 (cin -> r), kh x 1 depthwise (vertical, the H-axis stride,
// padding and dilation), 1 x kw depthwise (horizontal, the W-axis ones), 1x1 (r -> cout) + bias.
// Fused like TuckerConv2d: the ring holds the first stage's rows, the two depthwise passes run per
// output row in L1, and each band goes straight through the last stage.
class CPConv2dLayer {
 public:
  CPConv2dLayer(const float* first, std::size_t rank, std::size_t cin, const float* vertical,
                std::size_t kh, const float* horizontal, std::size_t kw, const float* last,
                std::size_t cout, const float* bias, const ConvGeometry& g);
  std::size_t in_channels() const { return first_.k(); }
  std::size_t out_channels() const { return last_.n(); }
  std::size_t rank() const { return first_.n(); }
  const ConvGeometry& geometry() const { return g_; }
  const float* first() const { return first_.weights(); }
  const float* vertical() const { return vertical_.data(); }      // (rank, kh)
  const float* horizontal() const { return horizontal_.data(); }  // (rank, kw)
  const float* last() const { return last_.weights(); }
  const float* bias() const { return last_.bias(); }
  void forward(const ConvInput& in, float* y) const;

 private:
  ConvGeometry g_;
  std::vector<float> vertical_, horizontal_;         // constructor layout
  std::vector<float> vertical_taps_, horizontal_taps_;  // (taps, rank): contiguous channels per tap
  WeightOperand first_;  // (rank, cin)
  WeightOperand last_;   // (cout, rank), carries the bias
};

}  // namespace lrk
