// The shared GEMM driver: weight packing, cache blocking and the fused low-rank schedule.
// Free of intrinsics and compiled with baseline flags; all ISA-specific work is in the
// micro-kernels.
#pragma once

#include <cstddef>

#include "lrkernels/aligned_buffer.h"
#include "lrkernels/kernel_config.h"

namespace lrk {

// A weight matrix W (n x k, y = x W^T + bias) packed for one GEMM family config: ceil(n / nr)
// panels, each [nr float bias][k rows of nr weight elements], zero-padded past column n, stored as
// bytes with the config's weight element size (4: f32, 2: the f16w configs). The bias leads its
// panel so the micro-kernel's first store needs no second stream.
class PackedWeights {
 public:
  // Packs for `config` or, when n fits in it, its narrow variant (config_for_width).
  PackedWeights(const float* w, std::size_t n, std::size_t k, const float* bias,
                const F32GemmConfig& config);
  // The config the panels were packed for: the one every GEMM on these weights must use.
  const F32GemmConfig& config() const { return *config_; }

  std::size_t n() const { return n_; }
  std::size_t k() const { return k_; }
  std::size_t nr() const { return nr_; }
  std::size_t num_panels() const { return (n_ + nr_ - 1) / nr_; }
  const float* panel_bias(std::size_t p) const {
    return reinterpret_cast<const float*>(data_.as<char>() + p * panel_bytes_);
  }
  // Row k0 of panel p's weights, in the config's weight type (float or fp16 bits).
  const void* panel_weights(std::size_t p, std::size_t k0 = 0) const {
    return data_.as<char>() + p * panel_bytes_ + nr_ * sizeof(float) +
           k0 * nr_ * config_->weight_bytes;
  }
  std::size_t bytes() const { return data_.size_bytes(); }

 private:
  const F32GemmConfig* config_;
  std::size_t n_, k_, nr_;
  std::size_t panel_bytes_;
  AlignedBuffer data_;
};

// Cache blocking of the driver. Zero fields take the defaults derived from the config.
struct Blocking {
  std::size_t kc = 0;  // K block: a kc x NR weight panel stays in L1 across the row tiles
  std::size_t nc = 0;  // N block: kc x nc of packed weights stays in L2
  std::size_t mc = 0;  // M block: mc x kc of the input stays in L2
  std::size_t mb = 0;  // low-rank fusion: rows whose rank-sized intermediate is kept in L2
};
Blocking resolve_blocking(const F32GemmConfig& config, std::size_t rank_hint);
// `config`, or its narrow variant when an operand with n output columns fits in the narrower panel.
const F32GemmConfig& config_for_width(const F32GemmConfig& config, std::size_t n);
// For tests: shrink the blocks so that small shapes cross every block edge. All zero restores
// defaults.
void set_blocking_override(const Blocking& b);

// The output clamp of a layer's last stage (the "minmax" epilogue), applied by the drivers to each
// output tile right after its last K block is stored, while the tile is in L1. fn == nullptr: none
// (a layer with both bounds infinite passes that, and pays nothing).
struct OutputClamp {
  F32ClampFn fn = nullptr;
  float lo = 0.0f, hi = 0.0f;
  explicit operator bool() const { return fn != nullptr; }
  // Clamps rows x cols of c (row stride ldc) in place.
  void apply(std::size_t rows, std::size_t cols, float* c, std::size_t ldc) const {
    if (fn != nullptr) fn(rows, cols, c, ldc, c, ldc, lo, hi);
  }
};

// Threads worth using for a call of this many flops (at most num_threads(), and at most the cap of
// a ScopedThreadCap alive on the calling thread).
std::size_t threads_for_flops(double flops);

// Caps the threads of the GEMMs this thread starts while it lives. A recurrent layer whose steps
// are too small to split runs its whole sequence on one thread: a worker woken for the input
// projections would otherwise spin beside the sequential steps (on SMT siblings, slowing them).
class ScopedThreadCap {
 public:
  explicit ScopedThreadCap(std::size_t cap);
  ~ScopedThreadCap();
  ScopedThreadCap(const ScopedThreadCap&) = delete;
  ScopedThreadCap& operator=(const ScopedThreadCap&) = delete;

 private:
  std::size_t saved_;
};

// C (m x n) = clamp(A (m x k, row stride lda) * W^T + bias), on the config W was packed for; split
// over output tiles on up to threads_for_flops() threads.
void gemm(std::size_t m, const float* a, std::size_t lda, const PackedWeights& w, float* c,
          std::size_t ldc, const OutputClamp& clamp = OutputClamp());

// y (m x out) = clamp((x (m x in) V^T) U^T + bias), fused: for each block of rows the rank-sized
// intermediate lives in a per-thread scratch buffer that stays in L1/L2 and is consumed at once.
// Only y is clamped, never the intermediate.
void lowrank_gemm(std::size_t m, const float* x, std::size_t ldx, const PackedWeights& v,
                  const PackedWeights& u, float* y, std::size_t ldy,
                  const OutputClamp& clamp = OutputClamp());

// Per-thread scratch of at least `bytes` (64-byte aligned), grown on demand and reused: no heap
// allocation in steady state. Valid until this thread's next request.
void* thread_scratch_bytes(std::size_t bytes);
template <class T>
T* thread_scratch(std::size_t count) {
  return static_cast<T*>(thread_scratch_bytes(checked_bytes(count, sizeof(T), "scratch")));
}
// A second per-thread buffer for a layer driver that calls gemm()/lowrank_gemm() (which take
// thread_scratch) while holding its own workspace (a recurrent layer's gate pre-activations and
// state): the same growth and trimming rules, counted in scratch_allocation_count().
void* thread_workspace_bytes(std::size_t bytes);
template <class T>
T* thread_workspace(std::size_t count) {
  return static_cast<T*>(thread_workspace_bytes(checked_bytes(count, sizeof(T), "workspace")));
}
// How many times any thread's scratch had to grow (tests check that repeated calls do not
// allocate).
std::size_t scratch_allocation_count();
// Scratch a thread keeps between calls. A larger workspace (a wide convolution) is freed when its
// call ends, so one such call does not pin tens of MB per thread for the life of the process; its
// allocation costs microseconds against the milliseconds such a call computes.
constexpr std::size_t kScratchKeepBytes = std::size_t(8) << 20;
// Frees this thread's scratch when it holds more than keep_bytes.
void trim_thread_scratch(std::size_t keep_bytes = kScratchKeepBytes);
// Bytes of scratch this thread holds now (tests).
std::size_t thread_scratch_held();

}  // namespace lrk
