#include <cstring>
#include <stdexcept>

#include "lrkernels/gemm.h"

namespace lrk {

void pack_f32_gemm_weights(const void* w_bytes, const void* bias_bytes, std::size_t n,
                           std::size_t k, std::size_t nr, void* dst_bytes) {
  const float* w = static_cast<const float*>(w_bytes);
  const float* bias = static_cast<const float*>(bias_bytes);
  float* dst = static_cast<float*>(dst_bytes);
  const std::size_t panels = (n + nr - 1) / nr, stride = (k + 1) * nr;
  std::memset(dst, 0, panels * stride * sizeof(float));
  for (std::size_t p = 0; p < panels; ++p) {
    float* panel_bias = dst + p * stride;
    const std::size_t col0 = p * nr;
    const std::size_t cols = (n - col0 < nr) ? n - col0 : nr;
    if (bias != nullptr) std::memcpy(panel_bias, bias + col0, cols * sizeof(float));
    float* panel = panel_bias + nr;
    for (std::size_t j = 0; j < cols; ++j) {
      const float* row = w + (col0 + j) * k;
      for (std::size_t kk = 0; kk < k; ++kk) panel[kk * nr + j] = row[kk];
    }
  }
}

PackedWeights::PackedWeights(const float* w, std::size_t n, std::size_t k, const float* bias,
                             const F32GemmConfig& config)
    : config_(&config_for_width(config, n)), n_(n), k_(k), nr_(config_->nr), panel_bytes_(0) {
  if (w == nullptr || n == 0 || k == 0 || nr_ == 0 || config_->pack == nullptr) {
    throw std::invalid_argument("PackedWeights: empty weight matrix or incomplete GEMM config");
  }
  // (k + 1) * nr elements per panel, every size checked in bytes before anything is allocated.
  std::size_t panel_elems = 0, total = 0;
  if (__builtin_add_overflow(k, std::size_t(1), &panel_elems) ||
      __builtin_mul_overflow(panel_elems, nr_, &panel_elems)) {
    throw std::length_error("packed weights too large");
  }
  panel_bytes_ = checked_bytes(panel_elems, config_->weight_bytes, "packed weights");
  total = checked_bytes(num_panels(), panel_bytes_, "packed weights");
  data_.resize_bytes(total);
  config_->pack(w, bias, n, k, nr_, data_.data());
}

}  // namespace lrk
