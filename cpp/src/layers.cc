#include "lrkernels/layers.h"

#include <stdexcept>
#include <string>

#include "lrkernels/dispatch.h"
#include "lrkernels/fp_mode.h"

namespace lrk {
namespace {

void check_io(const char* layer, std::size_t batch, const float* x, std::size_t ldx,
              std::size_t in, float* y, std::size_t ldy, std::size_t out) {
  if (batch == 0) return;
  if (x == nullptr || y == nullptr) throw std::invalid_argument(std::string(layer) + ": null x or y");
  if (batch > 1 && (ldx < in || ldy < out)) {
    throw std::invalid_argument(std::string(layer) + ": row stride below the row length (ldx=" +
                                std::to_string(ldx) + ", in_features=" + std::to_string(in) +
                                ", ldy=" + std::to_string(ldy) +
                                ", out_features=" + std::to_string(out) + ")");
  }
}

}  // namespace

WeightOperand::WeightOperand(const float* w, std::size_t n, std::size_t k, const float* bias)
    : n_(n), k_(k) {
  if (w == nullptr || n == 0 || k == 0) {
    throw std::invalid_argument("weight matrix must be non-empty, got shape (" + std::to_string(n) +
                                ", " + std::to_string(k) + ")");
  }
  w_.assign(w, w + n * k);
  if (bias != nullptr) bias_.assign(bias, bias + n);
  packed_for(active_gemm_kernels());  // pack once, at construction, for the ISA in use
}

const PackedWeights& WeightOperand::packed_for(const GemmKernels& ks) const {
  const PackedWeights* p = ready_[ks.isa].load(std::memory_order_acquire);
  if (p != nullptr) return *p;
  std::lock_guard<std::mutex> lock(pack_mutex_);
  if (!packs_[ks.isa]) {
    packs_[ks.isa] = std::make_unique<PackedWeights>(w_.data(), n_, k_, bias(), ks);
    ready_[ks.isa].store(packs_[ks.isa].get(), std::memory_order_release);
  }
  return *packs_[ks.isa];
}

LinearLayer::LinearLayer(const float* w, std::size_t out_features, std::size_t in_features,
                         const float* bias)
    : weight_(w, out_features, in_features, bias) {}

void LinearLayer::forward(std::size_t batch, const float* x, std::size_t ldx, float* y,
                          std::size_t ldy) const {
  check_io("Linear", batch, x, ldx, in_features(), y, ldy, out_features());
  const ScopedFlushDenormals ftz;  // see fp_mode.h
  const GemmKernels& ks = active_gemm_kernels();
  gemm(batch, x, ldx, weight_.packed_for(ks), y, ldy);
  record_used_isa(static_cast<Isa>(ks.isa));
}

LowRankLinearLayer::LowRankLinearLayer(const float* u, std::size_t out_features, std::size_t rank,
                                       const float* v, std::size_t in_features, const float* bias)
    : u_(u, out_features, rank, bias), v_(v, rank, in_features, nullptr) {}

void LowRankLinearLayer::forward(std::size_t batch, const float* x, std::size_t ldx, float* y,
                                 std::size_t ldy) const {
  check_io("LowRankLinear", batch, x, ldx, in_features(), y, ldy, out_features());
  const ScopedFlushDenormals ftz;  // see fp_mode.h
  const GemmKernels& ks = active_gemm_kernels();
  lowrank_gemm(batch, x, ldx, v_.packed_for(ks), u_.packed_for(ks), y, ldy);
  record_used_isa(static_cast<Isa>(ks.isa));
}

}  // namespace lrk
