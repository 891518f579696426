// The shared GEMM driver: weight packing, cache blocking and the fused low-rank schedule.
// Free of intrinsics and compiled with baseline flags; all ISA-specific work is in the micro-kernels.
#pragma once

#include <cstddef>

#include "lrkernels/aligned_buffer.h"
#include "lrkernels/ukernel.h"

namespace lrk {

// A weight matrix W (n x k, y = x W^T + bias) packed for micro-kernels of panel width nr:
// ceil(n / nr) panels, each [nr bias floats][k rows of nr floats], zero-padded past column n.
// The bias leads its panel so the micro-kernel's first store needs no second stream.
class PackedWeights {
 public:
  // Packs for the kernel set `ks` or, when n fits in it, its narrow variant (kernels_for_width).
  PackedWeights(const float* w, std::size_t n, std::size_t k, const float* bias,
                const GemmKernels& ks);
  // The kernel set the panels were packed for: the one every GEMM on these weights must use.
  const GemmKernels& kernels() const { return *kernels_; }

  std::size_t n() const { return n_; }
  std::size_t k() const { return k_; }
  std::size_t nr() const { return nr_; }
  std::size_t num_panels() const { return (n_ + nr_ - 1) / nr_; }
  const float* panel_bias(std::size_t p) const { return data_.data() + p * panel_stride(); }
  const float* panel_weights(std::size_t p) const { return panel_bias(p) + nr_; }
  std::size_t bytes() const { return data_.size() * sizeof(float); }

 private:
  std::size_t panel_stride() const { return (k_ + 1) * nr_; }
  const GemmKernels* kernels_;
  std::size_t n_, k_, nr_;
  AlignedBuffer data_;
};

// Cache blocking of the driver. Zero fields take the defaults derived from the kernel set.
struct Blocking {
  std::size_t kc = 0;  // K block: a kc x NR weight panel stays in L1 across the row tiles
  std::size_t nc = 0;  // N block: kc x nc of packed weights stays in L2
  std::size_t mc = 0;  // M block: mc x kc of the input stays in L2
  std::size_t mb = 0;  // low-rank fusion: rows whose rank-sized intermediate is kept in L2
};
Blocking resolve_blocking(const GemmKernels& ks, std::size_t rank_hint);
// `ks`, or its narrow variant when an operand with n output columns fits in the narrower panel.
const GemmKernels& kernels_for_width(const GemmKernels& ks, std::size_t n);
// For tests: shrink the blocks so that small shapes cross every block edge. All zero restores defaults.
void set_blocking_override(const Blocking& b);

// Threads worth using for a call of this many flops (at most num_threads()).
std::size_t threads_for_flops(double flops);

// C (m x n) = A (m x k, row stride lda) * W^T + bias, on the kernels W was packed for; split over
// output tiles on up to threads_for_flops() threads.
void gemm(std::size_t m, const float* a, std::size_t lda, const PackedWeights& w, float* c,
          std::size_t ldc);

// y (m x out) = (x (m x in) V^T) U^T + bias, fused: for each block of rows the rank-sized
// intermediate lives in a per-thread scratch buffer that stays in L1/L2 and is consumed at once.
void lowrank_gemm(std::size_t m, const float* x, std::size_t ldx, const PackedWeights& v,
                  const PackedWeights& u, float* y, std::size_t ldy);

// Per-thread scratch, grown on demand and reused: no heap allocation in steady state.
float* thread_scratch(std::size_t count);
// How many times any thread's scratch had to grow (tests check that repeated calls do not allocate).
std::size_t scratch_allocation_count();

}  // namespace lrk
