// What every layer shares: shapes and sizes, geometry checks, packed weight operands, the run
// prologue, and the linear chain (Linear, LowRankLinear).
#include "lrkernels/layer.h"

#include <stdexcept>

#include "lrkernels/dispatch.h"
#include "lrkernels/fp_mode.h"

namespace lrk {

void Shape::push_back(std::size_t d) {
  if (ndim_ == kMaxDims) {
    throw std::invalid_argument("arrays of more than " + std::to_string(kMaxDims) +
                                " dimensions are not supported");
  }
  dims_[ndim_++] = d;
}

bool Shape::operator==(const Shape& o) const {
  if (ndim_ != o.ndim_) return false;
  for (std::size_t i = 0; i < ndim_; ++i) {
    if (dims_[i] != o.dims_[i]) return false;
  }
  return true;
}

std::string shape_str(const Shape& s) {
  std::string text = "(";
  for (std::size_t i = 0; i < s.size(); ++i) text += (i ? ", " : "") + std::to_string(s[i]);
  return text + (s.size() == 1 ? ",)" : ")");
}

std::size_t checked_elements(const Shape& s, const char* what) {
  std::size_t count = 1;
  for (std::size_t d : s) {
    if (__builtin_mul_overflow(count, d, &count) ||
        count > static_cast<std::size_t>(PTRDIFF_MAX) / sizeof(float)) {
      throw std::invalid_argument(std::string(what) + ": output of shape " + shape_str(s) +
                                  " is too large");
    }
  }
  return count;
}

const char* layout_name(Layout l) { return l == Layout::nchw ? "NCHW" : "NHWC"; }

namespace {

// Geometry values are at most kMaxGeometry (2^24), so span and 2 * pad cannot overflow; the input
// size is checked where it enters (ConvChain::output_shape), so in + 2 * pad cannot either.
std::size_t out_size(std::size_t in, std::size_t pad, std::size_t dil, std::size_t k,
                     std::size_t stride) {
  const std::size_t span = dil * (k - 1) + 1;
  if (in + 2 * pad < span) return 0;
  return (in + 2 * pad - span) / stride + 1;
}

std::string pair_str(std::size_t a, std::size_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

}  // namespace

std::size_t ConvGeometry::out_h(std::size_t h) const { return out_size(h, ph, dh, kh, sh); }
std::size_t ConvGeometry::out_w(std::size_t w) const { return out_size(w, pw, dw, kw, sw); }

void ConvGeometry::check() const {
  struct Field {
    const char* name;
    std::size_t a, b, minimum;
  };
  const Field fields[] = {{"kernel size", kh, kw, 1},
                          {"stride", sh, sw, 1},
                          {"padding", ph, pw, 0},
                          {"dilation", dh, dw, 1}};
  for (const Field& f : fields) {
    if (f.a > kMaxGeometry || f.b > kMaxGeometry) {
      throw std::invalid_argument(std::string(f.name) + " must be <= " +
                                  std::to_string(kMaxGeometry) + ", got " + pair_str(f.a, f.b));
    }
    if (f.a < f.minimum || f.b < f.minimum) {
      throw std::invalid_argument(std::string(f.name) + " must be >= " + std::to_string(f.minimum) +
                                  ", got " + pair_str(f.a, f.b));
    }
  }
  if (kh * kw > kMaxTaps) {
    throw std::invalid_argument("convolution kernel " + pair_str(kh, kw) + " has more than " +
                                std::to_string(kMaxTaps) + " taps");
  }
}

WeightOperand::WeightOperand(const float* w, std::size_t n, std::size_t k, const float* bias,
                             const F32GemmConfig* prepack)
    : n_(n), k_(k), w_(w), bias_(bias) {
  if (w == nullptr || n == 0 || k == 0) {
    throw std::invalid_argument("weight matrix must be non-empty, got shape " + shape_str({n, k}));
  }
  // Pack once, at construction, for the ISA (and precision) in use.
  packed_for(prepack != nullptr ? *prepack : *active_kernel_set().f32_gemm);
}

WeightOperand::WeightOperand(std::vector<float> w, std::size_t n, std::size_t k, const float* bias,
                             const F32GemmConfig* prepack)
    : WeightOperand(w.data(), n, k, bias, prepack) {
  owned_ = std::move(w);  // the buffer moves, so w_ still points at it
}

const PackedWeights& WeightOperand::packed_for(const F32GemmConfig& config) const {
  for (std::size_t i = 0; i < kMaxPacks; ++i) {
    const F32GemmConfig* key = keys_[i].load(std::memory_order_acquire);
    if (key == &config) return *packs_[i];
    if (key == nullptr) break;
  }
  std::lock_guard<std::mutex> lock(pack_mutex_);
  for (std::size_t i = 0; i < kMaxPacks; ++i) {
    const F32GemmConfig* key = keys_[i].load(std::memory_order_relaxed);
    if (key == &config) return *packs_[i];
    if (key == nullptr) {
      packs_[i] = std::make_unique<PackedWeights>(w_, n_, k_, bias_, config);
      keys_[i].store(&config, std::memory_order_release);
      return *packs_[i];
    }
  }
  throw std::logic_error("WeightOperand: more kernel configs than pack slots");
}

Layer::Layer(std::string kind, std::vector<Factor> factors, const float* bias, std::size_t out_dim,
             Precision precision)
    : kind_(std::move(kind)),
      factors_(std::move(factors)),
      out_dim_(out_dim),
      precision_(precision) {
  if (bias != nullptr) bias_.assign(bias, bias + out_dim);
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32:
      return "fp32";
    case Precision::fp16:
      return "fp16";
    case Precision::int8:
      return "int8";
  }
  return "unknown";
}

const char* algorithm_name(ConvAlgorithm a) {
  switch (a) {
    case ConvAlgorithm::automatic:
      return "auto";
    case ConvAlgorithm::direct:
      return "direct";
    case ConvAlgorithm::winograd:
      return "winograd";
  }
  return "?";
}

bool algorithm_from_name(const std::string& name, ConvAlgorithm* out) {
  for (ConvAlgorithm a :
       {ConvAlgorithm::automatic, ConvAlgorithm::direct, ConvAlgorithm::winograd}) {
    if (name == algorithm_name(a)) {
      *out = a;
      return true;
    }
  }
  return false;
}

bool precision_from_name(const std::string& name, Precision* out) {
  for (Precision p : {Precision::fp32, Precision::fp16, Precision::int8}) {
    if (name == precision_name(p)) {
      *out = p;
      return true;
    }
  }
  return false;
}

const F32GemmConfig& gemm_config_for(const KernelSet& ks, Precision precision) {
  if (precision != Precision::fp16) return *ks.f32_gemm;
  const F32GemmConfig* c = f16w_gemm_config(ks.isa);
  return c != nullptr ? *c : *f16w_gemm_config(Isa::scalar);
}

const QD8GemmConfig& qd8_config_for(const KernelSet& ks) {
  const QD8GemmConfig* c = qd8_gemm_config(ks.isa);
  return c != nullptr ? *c : *qd8_gemm_config(Isa::scalar);
}

namespace {
thread_local const char* t_last_kernel = "";
}  // namespace

const char* last_used_kernel() { return t_last_kernel; }
void record_used_kernel(const char* name) { t_last_kernel = name; }

std::vector<std::string> Layer::kernel_names(const KernelSet& ks) const {
  if (precision_ == Precision::int8) return {qd8_config_for(ks).name};
  const F32GemmConfig& c = gemm_config_for(ks, precision_);
  std::vector<std::string> names = {c.name};
  if (c.narrow != nullptr) names.emplace_back(c.narrow->name);
  return names;
}

OutputClamp Layer::output_clamp(const KernelSet& ks) const {
  OutputClamp c;
  if (has_output_clamp()) {
    c.fn = ks.f32_clamp->clamp;
    c.lo = output_min_;
    c.hi = output_max_;
  }
  return c;
}

void Layer::run(const float* x, const Shape& x_shape, std::size_t ldx, float* y) const {
  const Shape y_shape = output_shape(x_shape);
  const bool empty = checked_elements(y_shape, kind_.c_str()) == 0;
  if (!empty && (x == nullptr || y == nullptr)) {
    throw std::invalid_argument(kind_ + ": null input or output");
  }
  const ScopedFlushDenormals ftz;  // see fp_mode.h
  const KernelSet& ks = active_kernel_set();
  if (!empty) {
    struct Trim {  // also when a stage throws
      ~Trim() { trim_thread_scratch(); }
    } trim;
    run_stages(ks, x, x_shape, ldx, y);
  }
  record_used_isa(ks.isa);
}

// ---- linear chain -------------------------------------------------------------------------------

LinearChain::LinearChain(std::string kind, std::vector<Factor> factors, const float* bias,
                         const std::vector<const Factor*>& stages, Precision precision)
    : Layer(std::move(kind), std::move(factors), bias, stages.back()->shape[0], precision) {
  in_dim_ = stages.front()->shape[1];
  if (stages.size() > 2) throw std::logic_error("LinearChain: at most two GEMM stages");
  for (std::size_t i = 0; i + 1 < stages.size(); ++i) ranks_.push_back(stages[i]->shape[0]);
  const KernelSet& ks = active_kernel_set();
  if (precision == Precision::int8) {
    std::vector<std::vector<float>> w;
    for (const Factor* f : stages) w.push_back(f->data);
    if (w.size() == 2) {  // V (r x in), U (out x r): exact power-of-two rebalancing first
      rebalance_rank_components(w[1], out_dim_, w[0], ranks_[0], in_dim_);
    }
    for (std::size_t i = 0; i < stages.size(); ++i) {
      const bool last = i + 1 == stages.size();
      qstages_.push_back(std::make_unique<QuantizedOperand>(
          w[i].data(), stages[i]->shape[0], stages[i]->shape[1], 1, last ? this->bias() : nullptr,
          &qd8_config_for(ks)));
    }
    return;
  }
  const F32GemmConfig* prepack = &gemm_config_for(ks, precision);
  for (std::size_t i = 0; i < stages.size(); ++i) {
    const Factor& f = *stages[i];
    const bool last = i + 1 == stages.size();
    stages_.push_back(std::make_unique<WeightOperand>(f.data.data(), f.shape[0], f.shape[1],
                                                      last ? this->bias() : nullptr, prepack));
  }
}

Shape LinearChain::output_shape(const Shape& x) const {
  if (x.size() != 1 && x.size() != 2) {
    throw std::invalid_argument(kind_ +
                                " expects x of shape (in_features,) or (batch, in_features) = (" +
                                std::to_string(in_dim_) + ",) or (batch, " +
                                std::to_string(in_dim_) + "), got shape " + shape_str(x));
  }
  if (x.back() != in_dim_) {
    throw std::invalid_argument(kind_ + " has in_features=" + std::to_string(in_dim_) +
                                ", but x has shape " + shape_str(x));
  }
  return x.size() == 1 ? Shape{out_dim_} : Shape{x[0], out_dim_};
}

void LinearChain::run_stages(const KernelSet& ks, const float* x, const Shape& x_shape,
                             std::size_t ldx, float* y) const {
  const std::size_t batch = x_shape.size() == 1 ? 1 : x_shape[0];
  if (batch > 1 && ldx < in_dim_) {
    throw std::invalid_argument(kind_ + ": row stride " + std::to_string(ldx) +
                                " below in_features=" + std::to_string(in_dim_));
  }
  if (precision_ == Precision::int8) {
    const QD8GemmConfig& q = qd8_config_for(ks);
    record_used_kernel(q.name);
    if (qstages_.size() == 1) {
      qd8_gemm(q, batch, x, ldx, *qstages_[0], y, out_dim_, output_clamp(ks));
    } else {
      qd8_lowrank_gemm(q, batch, x, ldx, *qstages_[0], *qstages_[1], y, out_dim_, output_clamp(ks));
    }
    return;
  }
  const F32GemmConfig& gemm_config = gemm_config_for(ks, precision_);
  record_used_kernel(gemm_config.name);
  if (stages_.size() == 1) {
    gemm(batch, x, ldx, stages_[0]->packed_for(gemm_config), y, out_dim_, output_clamp(ks));
  } else {
    lowrank_gemm(batch, x, ldx, stages_[0]->packed_for(gemm_config),
                 stages_[1]->packed_for(gemm_config), y, out_dim_, output_clamp(ks));
  }
}

}  // namespace lrk
