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

WeightOperand::WeightOperand(const float* w, std::size_t n, std::size_t k, const float* bias)
    : n_(n), k_(k), w_(w), bias_(bias) {
  if (w == nullptr || n == 0 || k == 0) {
    throw std::invalid_argument("weight matrix must be non-empty, got shape " + shape_str({n, k}));
  }
  packed_for(*active_kernel_set().f32_gemm);  // pack once, at construction, for the ISA in use
}

WeightOperand::WeightOperand(std::vector<float> w, std::size_t n, std::size_t k, const float* bias)
    : WeightOperand(w.data(), n, k, bias) {
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

Layer::Layer(std::string kind, std::vector<Factor> factors, const float* bias, std::size_t out_dim)
    : kind_(std::move(kind)), factors_(std::move(factors)), out_dim_(out_dim) {
  if (bias != nullptr) bias_.assign(bias, bias + out_dim);
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
                         const std::vector<const Factor*>& stages)
    : Layer(std::move(kind), std::move(factors), bias, stages.back()->shape[0]) {
  in_dim_ = stages.front()->shape[1];
  for (std::size_t i = 0; i < stages.size(); ++i) {
    const Factor& f = *stages[i];
    const bool last = i + 1 == stages.size();
    stages_.push_back(std::make_unique<WeightOperand>(f.data.data(), f.shape[0], f.shape[1],
                                                      last ? this->bias() : nullptr));
    if (!last) ranks_.push_back(f.shape[0]);
  }
  if (stages_.size() > 2) throw std::logic_error("LinearChain: at most two GEMM stages");
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
  const F32GemmConfig& gemm_config = *ks.f32_gemm;
  if (stages_.size() == 1) {
    gemm(batch, x, ldx, stages_[0]->packed_for(gemm_config), y, out_dim_, output_clamp(ks));
  } else {
    lowrank_gemm(batch, x, ldx, stages_[0]->packed_for(gemm_config),
                 stages_[1]->packed_for(gemm_config), y, out_dim_, output_clamp(ks));
  }
}

}  // namespace lrk
