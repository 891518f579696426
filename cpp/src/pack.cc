#include <cstring>
#include <stdexcept>

#include "lrkernels/gemm.h"

namespace lrk {

PackedWeights::PackedWeights(const float* w, std::size_t n, std::size_t k, const float* bias,
                             const GemmKernels& ks)
    : kernels_(&kernels_for_width(ks, n)), n_(n), k_(k), nr_(kernels_->nr) {
  if (w == nullptr || n == 0 || k == 0 || nr_ == 0) {
    throw std::invalid_argument("PackedWeights: empty weight matrix or zero panel width");
  }
  data_.resize(num_panels() * panel_stride());
  std::memset(data_.data(), 0, data_.size() * sizeof(float));
  for (std::size_t p = 0; p < num_panels(); ++p) {
    float* dst = data_.data() + p * panel_stride();
    const std::size_t col0 = p * nr_;
    const std::size_t cols = (n_ - col0 < nr_) ? n_ - col0 : nr_;
    if (bias != nullptr) std::memcpy(dst, bias + col0, cols * sizeof(float));
    float* panel = dst + nr_;
    for (std::size_t j = 0; j < cols; ++j) {
      const float* row = w + (col0 + j) * k_;
      for (std::size_t kk = 0; kk < k_; ++kk) panel[kk * nr_ + j] = row[kk];
    }
  }
}

}  // namespace lrk
