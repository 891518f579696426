// Layers as operators, created once and run many times (XNNPACK's create/run): every precondition
// is checked here, in C++, when a layer is created (factor shapes, ranks, bias, geometry, limits)
// and when it runs (input shape, overflow-checked output and workspace sizes). A layer is a chain
// of stages over packed weights: a linear chain (GEMM stages) or a convolution chain (an optional
// 1x1 stage, a spatial middle stage, an optional 1x1 stage). Layer kinds (LowRankLinear, Conv2d,
// TuckerConv2d, ...) are rows of one table, layer_kinds(); bindings are generated from it.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lrkernels/gemm.h"
#include "lrkernels/kernel_config.h"
#include "lrkernels/quantized.h"

namespace lrk {

struct LayerKind;
struct LayerParams;

// A tensor shape of at most kMaxDims dimensions, stored inline: a layer call builds shapes without
// touching the heap.
class Shape {
 public:
  static constexpr std::size_t kMaxDims = 8;
  Shape() = default;
  Shape(std::initializer_list<std::size_t> dims) {
    for (std::size_t d : dims) push_back(d);
  }
  template <class It>
  Shape(It first, It last) {
    for (; first != last; ++first) push_back(static_cast<std::size_t>(*first));
  }
  // std::invalid_argument beyond kMaxDims dimensions.
  void push_back(std::size_t d);
  std::size_t size() const { return ndim_; }
  bool empty() const { return ndim_ == 0; }
  void clear() { ndim_ = 0; }
  std::size_t operator[](std::size_t i) const { return dims_[i]; }
  std::size_t back() const { return dims_[ndim_ - 1]; }
  const std::size_t* begin() const { return dims_; }
  const std::size_t* end() const { return dims_ + ndim_; }
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  std::size_t dims_[kMaxDims] = {};
  std::size_t ndim_ = 0;
};
std::string shape_str(const Shape& s);  // "(2, 3)", "(4,)"
// Elements of a tensor of this shape; std::invalid_argument "<what>: output of shape ... is too
// large" when the element count or its float32 byte size overflows.
std::size_t checked_elements(const Shape& s, const char* what);

// Geometry values above this are rejected, so that sizes like h + 2 * padding cannot overflow.
constexpr std::size_t kMaxGeometry = std::size_t(1) << 24;
// Image sides above this are refused (no array has one: numpy's limit is PTRDIFF_MAX elements), so
// h + 2 * padding and every size derived from it stay far from overflow.
constexpr std::size_t kMaxImageSide = std::size_t(PTRDIFF_MAX) / 4;
// Tap pointers of one pixel tile live on the stack of the thread computing it.
constexpr std::size_t kMaxTaps = 1024;

enum class Layout { nchw, nhwc };
const char* layout_name(Layout l);

// The arithmetic of a layer's kernels. Inputs and outputs are float32 in every case.
//   fp32: f32 weights and arithmetic.
//   fp16: fp16-stored weights (f16w family: half the bytes), f32 arithmetic.
//   int8: int8 weights per output channel, inputs quantized per row (qd8-f32-qc8w family).
enum class Precision { fp32, fp16, int8 };
const char* precision_name(Precision p);
bool precision_from_name(const std::string& name, Precision* out);

// How a convolution's kxk stage is computed.
//   direct:   implicit GEMM over the kh x kw taps.
//   winograd: F(2x2, 3x3) (3x3, stride 1, dilation 1, fp32 only): 16 GEMMs of the transformed
//             domain, 2.25x fewer multiply-adds.
//   automatic: winograd where it is faster (a cost model in conv_chain.cc), else direct.
enum class ConvAlgorithm { automatic, direct, winograd };
const char* algorithm_name(ConvAlgorithm a);  // "auto", "direct", "winograd"
bool algorithm_from_name(const std::string& name, ConvAlgorithm* out);

struct ConvGeometry {
  std::size_t kh = 1, kw = 1;  // kernel
  std::size_t sh = 1, sw = 1;  // stride (>= 1)
  std::size_t ph = 0, pw = 0;  // symmetric zero padding per axis
  std::size_t dh = 1, dw = 1;  // dilation (>= 1)
  // Output size for an h x w input; 0 when the kernel does not fit.
  std::size_t out_h(std::size_t h) const;
  std::size_t out_w(std::size_t w) const;
  // std::invalid_argument naming the argument when a value is out of range.
  void check() const;
};

// A weight matrix W (n x k) and optional bias (n), packed once per kernel family config: at
// construction for the active ISA, on first use for another (set_isa later). The float32 source
// stays readable for that: borrowed from the layer's own factors (which outlive the operand), or
// owned when it is a rearranged copy (a convolution's taps-outer weight).
class WeightOperand {
 public:
  // Borrows w and bias: both must outlive the operand. Packs for `prepack` (default: the active
  // ISA's f32 config) at once.
  WeightOperand(const float* w, std::size_t n, std::size_t k, const float* bias,
                const F32GemmConfig* prepack = nullptr);
  // Owns w (n * k floats); borrows bias.
  WeightOperand(std::vector<float> w, std::size_t n, std::size_t k, const float* bias,
                const F32GemmConfig* prepack = nullptr);
  WeightOperand(const WeightOperand&) = delete;
  WeightOperand& operator=(const WeightOperand&) = delete;

  std::size_t n() const { return n_; }
  std::size_t k() const { return k_; }
  const float* bias() const { return bias_; }
  const PackedWeights& packed_for(const F32GemmConfig& config) const;

 private:
  static constexpr std::size_t kMaxPacks = 8;  // distinct configs one process can ask for
  std::size_t n_, k_;
  std::vector<float> owned_;
  const float* w_;
  const float* bias_;
  mutable std::mutex pack_mutex_;
  // Keyed by the config the panels were requested for; published once, read lock-free.
  mutable std::unique_ptr<PackedWeights> packs_[kMaxPacks];
  mutable std::atomic<const F32GemmConfig*> keys_[kMaxPacks] = {};
};

// A factor as the user gave it: its name, shape and float32 values (what the layer exposes).
struct Factor {
  std::string name;
  Shape shape;
  std::vector<float> data;
};

class Layer {
 public:
  virtual ~Layer() = default;
  const std::string& kind() const { return kind_; }
  const std::vector<Factor>& factors() const { return factors_; }
  const float* bias() const { return bias_.empty() ? nullptr : bias_.data(); }
  const Shape& ranks() const { return ranks_; }
  std::size_t in_dim() const { return in_dim_; }    // in_features / in_channels
  std::size_t out_dim() const { return out_dim_; }  // out_features / out_channels
  // The clamp of every output element (the fused activation): -inf and +inf when there is none.
  float output_min() const { return output_min_; }
  float output_max() const { return output_max_; }
  bool has_output_clamp() const { return !(output_min_ == -INFINITY && output_max_ == INFINITY); }
  virtual bool is_conv() const = 0;
  Precision precision() const { return precision_; }
  // The micro-kernel families a call on kernel set `ks` uses now, by config name (the GEMM
  // family of the layer's precision, as chosen for this CPU's features).
  std::vector<std::string> kernel_names(const KernelSet& ks) const;

  // Checks the shape of a call's input and returns the output's; std::invalid_argument naming
  // both shapes otherwise. Linear: (in,) or (batch, in). Convolution: 4-D in the layer's layout.
  virtual Shape output_shape(const Shape& x_shape) const = 0;

  // The one run prologue of every layer: checks (shapes, sizes, null pointers), flush-to-zero,
  // kernel lookup, then the stages, then the last-used ISA. x: float32, rows of ldx elements for
  // a linear layer (ldx >= in_dim), contiguous 4-D for a convolution; y: contiguous output.
  void run(const float* x, const Shape& x_shape, std::size_t ldx, float* y) const;

 protected:
  Layer(std::string kind, std::vector<Factor> factors, const float* bias, std::size_t out_dim,
        Precision precision);
  virtual void run_stages(const KernelSet& ks, const float* x, const Shape& x_shape,
                          std::size_t ldx, float* y) const = 0;
  // The clamp the last stage applies with this kernel set's clamp kernel; none (fn == nullptr)
  // when both bounds are infinite.
  OutputClamp output_clamp(const KernelSet& ks) const;

  std::string kind_;
  std::vector<Factor> factors_;
  std::vector<float> bias_;
  Shape ranks_;
  std::size_t in_dim_ = 0, out_dim_ = 0;
  Precision precision_ = Precision::fp32;

 private:
  friend std::unique_ptr<Layer> create_layer(const LayerKind& kind, std::vector<Factor> factors,
                                             const float* bias, const Shape& bias_shape,
                                             const LayerParams& params);
  float output_min_ = -INFINITY, output_max_ = INFINITY;  // set by create_layer, checked there
};

// y = x W^T + b (one GEMM stage) or y = U (V x) + b (two stages, fused in lowrank_gemm).
class LinearChain : public Layer {
 public:
  // stages[i] = (weights n x k, row-major): W, or V then U. The bias goes with the last stage.
  LinearChain(std::string kind, std::vector<Factor> factors, const float* bias,
              const std::vector<const Factor*>& stages, Precision precision);
  bool is_conv() const override { return false; }
  Shape output_shape(const Shape& x_shape) const override;

 private:
  void run_stages(const KernelSet& ks, const float* x, const Shape& x_shape, std::size_t ldx,
                  float* y) const override;
  std::vector<std::unique_ptr<WeightOperand>> stages_;      // fp32, fp16
  std::vector<std::unique_ptr<QuantizedOperand>> qstages_;  // int8
};

// The middle stage of a convolution chain.
struct ConvMiddle {
  enum Kind { kxk_conv, depthwise_hv } kind = kxk_conv;
  // kxk_conv: weight (n_out, n_in, kh, kw). depthwise_hv: vertical (rank, kh), horizontal (rank,
  // kw).
  const Factor* weight = nullptr;
  const Factor* vertical = nullptr;
  const Factor* horizontal = nullptr;
};

// [1x1 first] -> middle (geometry g) -> [1x1 last] + bias, fused over bands of output rows.
class ConvChain : public Layer {
 public:
  ConvChain(std::string kind, std::vector<Factor> factors, const float* bias, const Factor* first,
            const ConvMiddle& middle, const Factor* last, const ConvGeometry& g, Layout layout,
            Precision precision, ConvAlgorithm algorithm = ConvAlgorithm::automatic);
  ~ConvChain() override;
  bool is_conv() const override { return true; }
  Shape output_shape(const Shape& x_shape) const override;
  const ConvGeometry& geometry() const { return g_; }
  Layout layout() const { return layout_; }
  // The kxk stage's algorithm as resolved at construction: direct or winograd (never automatic).
  ConvAlgorithm algorithm() const;

  struct Stages;  // packed weights of the chain (conv_chain.cc)

 private:
  void run_stages(const KernelSet& ks, const float* x, const Shape& x_shape, std::size_t ldx,
                  float* y) const override;
  void run_int8(const KernelSet& ks, const float* x, const Shape& x_shape, float* y) const;
  ConvGeometry g_;
  Layout layout_;
  std::unique_ptr<Stages> stages_;
};

// ---- the table of layer kinds -------------------------------------------------------------------

struct FactorSpec {
  const char* name;  // "first"
  std::size_t ndim;  // 2
  const char* dims;  // "(R_in, in_channels)"
};

// The creation parameters of a layer besides its factors and bias.
struct LayerParams {
  ConvGeometry geometry;         // convolutions only; kh, kw are taken from the factors
  Layout layout = Layout::nchw;  // convolutions only
  // Every kind: each output element is clamped to [output_min, output_max] in the last stage's
  // output path (relu: 0, +inf; relu6: 0, 6). NaN outputs stay NaN. Neither may be NaN, and
  // output_min <= output_max (create_layer checks). Both infinite (the default): no clamp at all.
  float output_min = -INFINITY;
  float output_max = INFINITY;
  Precision precision = Precision::fp32;  // LowRankLinear, Linear, TuckerConv2d, Conv2d
  ConvAlgorithm algorithm = ConvAlgorithm::automatic;  // convolutions with a kxk stage
};
using ConvParams = LayerParams;  // the former name

// The GEMM configs a layer of `precision` uses on kernel set `ks`: the f32 family, the f16w row
// for this CPU's features (the scalar one when the ISA has none), or the int8 row.
const F32GemmConfig& gemm_config_for(const KernelSet& ks, Precision precision);
const QD8GemmConfig& qd8_config_for(const KernelSet& ks);

// The config name of the last layer call's GEMM family on this thread ("" before any): tests'
// proof of which kernel ran (the SDOT or the SMULL int8 kernel, say).
const char* last_used_kernel();
void record_used_kernel(const char* name);

struct LayerKind {
  const char* name;  // the class name, e.g. "TuckerConv2d"
  bool conv;
  bool reduced_precision;           // accepts precision fp16 and int8
  std::vector<FactorSpec> factors;  // constructor order, bias excluded
  std::size_t bias_factor;          // the factor whose first dimension the bias must match
  const char* rank_names;           // how ranks() reads: "" (dense), "rank", "(R_in, R_out)"
  const char* doc;                  // the class docstring (Python)
  // Builds the layer's stage chain from factors whose count, ndim, non-emptiness and bias shape
  // create_layer has checked; checks what is specific to the kind (rank agreement).
  std::unique_ptr<Layer> (*build)(std::vector<Factor> factors, const float* bias,
                                  const LayerParams& params);
};

const std::vector<LayerKind>& layer_kinds();
const LayerKind* find_layer_kind(const std::string& name);
// Creates a layer of `kind`: every precondition checked; std::invalid_argument naming the
// offending factor and shapes (or the output bounds) otherwise. bias: nullptr (bias_shape empty) or
// a bias of bias_shape, which must be (out,).
std::unique_ptr<Layer> create_layer(const LayerKind& kind, std::vector<Factor> factors,
                                    const float* bias, const Shape& bias_shape,
                                    const LayerParams& params = LayerParams());
// std::invalid_argument "output_min=... and output_max=...: ..." unless both are numbers and
// output_min <= output_max.
void check_output_bounds(float output_min, float output_max);
// std::invalid_argument naming the factor unless its weights suit the precision: finite for int8,
// below fp16's overflow threshold (|w| < 65520) for fp16. fp32 accepts anything.
void check_reduced_precision_weights(const char* kind, const std::vector<Factor>& factors,
                                     Precision precision);

}  // namespace lrk
