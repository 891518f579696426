// Layers of the C++ core. Python binds these; C++ users can use them directly.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "lrkernels/gemm.h"
#include "lrkernels/isa.h"

namespace lrk {

// A weight matrix W (n x k) and optional bias (n), kept as float32 and packed once per ISA: at
// construction for the active ISA, and on first use for another one (set_isa after building a layer).
class WeightOperand {
 public:
  WeightOperand(const float* w, std::size_t n, std::size_t k, const float* bias);
  WeightOperand(const WeightOperand&) = delete;
  WeightOperand& operator=(const WeightOperand&) = delete;

  std::size_t n() const { return n_; }
  std::size_t k() const { return k_; }
  const float* weights() const { return w_.data(); }
  const float* bias() const { return bias_.empty() ? nullptr : bias_.data(); }
  const PackedWeights& packed_for(const GemmKernels& ks) const;

 private:
  std::size_t n_, k_;
  std::vector<float> w_, bias_;
  mutable std::mutex pack_mutex_;
  mutable std::array<std::unique_ptr<PackedWeights>, kNumIsas> packs_;
  mutable std::array<std::atomic<const PackedWeights*>, kNumIsas> ready_{};
};

// y = x W^T + bias. W is (out_features, in_features) row-major.
class LinearLayer {
 public:
  LinearLayer(const float* w, std::size_t out_features, std::size_t in_features, const float* bias);
  std::size_t in_features() const { return weight_.k(); }
  std::size_t out_features() const { return weight_.n(); }
  const WeightOperand& weight() const { return weight_; }
  // x: batch rows of in_features floats, row stride ldx; y: batch rows, row stride ldy.
  void forward(std::size_t batch, const float* x, std::size_t ldx, float* y, std::size_t ldy) const;

 private:
  WeightOperand weight_;
};

// y = U (V x) + bias, U (out_features, rank), V (rank, in_features), both row-major.
class LowRankLinearLayer {
 public:
  LowRankLinearLayer(const float* u, std::size_t out_features, std::size_t rank, const float* v,
                     std::size_t in_features, const float* bias);
  std::size_t in_features() const { return v_.k(); }
  std::size_t out_features() const { return u_.n(); }
  std::size_t rank() const { return v_.n(); }
  const WeightOperand& u() const { return u_; }
  const WeightOperand& v() const { return v_; }
  void forward(std::size_t batch, const float* x, std::size_t ldx, float* y, std::size_t ldy) const;

 private:
  WeightOperand u_;  // carries the bias: it is added in the second stage's store
  WeightOperand v_;
};

}  // namespace lrk
