// int8 (qd8-f32-qc8w) layers' operands and driver: weights quantized once per output channel
// (symmetric, [-127, 127]), inputs quantized per row at call time (asymmetric int8), int32 dot
// products on the family's micro-kernels, fp32 dequantization, bias and clamp. The arithmetic
// is defined exactly by lrkernels.reference (quantize_weights, quantize_rows, qd8_linear): the
// int32 sums are exact and every float operation is a single float32 rounding in the same order,
// so the kernels agree with it bit for bit (subnormal intermediates aside: layers flush them).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "lrkernels/aligned_buffer.h"
#include "lrkernels/gemm.h"
#include "lrkernels/kernel_config.h"

namespace lrk {

// K beyond this could overflow the int32 sums (255 * 127 * K < 2^31); layers refuse it.
constexpr std::size_t kMaxQuantizedK = 65536;

// W (n x k) quantized per row: w ~ scale[j] * q[j][:], scale = max|w_j| / 127 (1 for a zero row),
// q = clamp(rint(w / scale), -127, 127); wsum[j] = sum_k q[j][k] (the zero-point correction).
struct QuantizedMatrix {
  std::size_t n = 0, k = 0;
  std::vector<std::int8_t> q;
  std::vector<float> scale;
  std::vector<std::int32_t> wsum;
};
QuantizedMatrix quantize_weights(const float* w, std::size_t n, std::size_t k);

// Exact power-of-two rebalancing of a rank-r pair (U: out x r, V: r x in) before quantization:
// component j moves 2^s_j from V's row to U's column, s_j = floor((e_v - e_u) / 2) with e the
// binary exponents of max|V_j| and max|U_:,j|, so both ranges meet in the middle (y is unchanged
// to the bit: scaling by powers of two is exact).
void rebalance_rank_components(std::vector<float>& u, std::size_t out, std::vector<float>& v,
                               std::size_t r, std::size_t in);

// A quantized weight operand: the int8 matrix (n x taps*channels, K ordered tap by tap, as the
// f32 conv weights are) and its packings, one per QD8 config, made on first use (one at creation).
class QuantizedOperand {
 public:
  QuantizedOperand(const float* w, std::size_t n, std::size_t channels, std::size_t taps,
                   const float* bias, const QD8GemmConfig* prepack);
  QuantizedOperand(const QuantizedOperand&) = delete;
  QuantizedOperand& operator=(const QuantizedOperand&) = delete;

  struct Packed {
    const QD8GemmConfig* config;
    std::size_t kgroups;      // per tap: ceil(channels / 4)
    std::size_t panel_bytes;  // taps * kgroups * nr * 4
    AlignedBuffer data;
    const std::int8_t* panel(std::size_t p) const {
      return data.as<std::int8_t>() + p * panel_bytes;
    }
  };
  const Packed& packed_for(const QD8GemmConfig& config) const;

  std::size_t n() const { return m_.n; }
  std::size_t channels() const { return channels_; }
  std::size_t taps() const { return taps_; }
  const float* scale() const { return m_.scale.data(); }
  const std::int32_t* wsum() const { return m_.wsum.data(); }
  const float* bias() const { return bias_; }

 private:
  static constexpr std::size_t kMaxPacks = 8;
  QuantizedMatrix m_;
  std::size_t channels_, taps_;
  const float* bias_;
  mutable std::mutex pack_mutex_;
  mutable std::unique_ptr<Packed> packs_[kMaxPacks];
  mutable std::atomic<const QD8GemmConfig*> keys_[kMaxPacks] = {};
};

// y (m x n) = clamp(dequant(quant(x) W_q^T) + bias), x rows of ldx floats, each row quantized on
// its own, or (shared_quantization) all m rows with one scale and zero point (a convolution's 1x1
// stage: an image row or a band of pixels). workspace: at least qd8_gemm_workspace_bytes, 64-byte
// aligned (a convolution's band buffers), or nullptr for this thread's scratch.
void qd8_gemm(const QD8GemmConfig& config, std::size_t m, const float* x, std::size_t ldx,
              const QuantizedOperand& w, float* y, std::size_t ldy, const OutputClamp& clamp,
              void* workspace = nullptr, bool shared_quantization = false);
std::size_t qd8_gemm_workspace_bytes(const QD8GemmConfig& config, std::size_t m, std::size_t k,
                                     std::size_t n);

// The steps of the int8 arithmetic, shared by the linear and convolution drivers (the element-wise
// work runs on the config's per-ISA range / quantize / dequantize functions).
using RowQuant = QD8RowQuant;
// scale and zero from lo and hi (scale 1, zero 0, zero_range for an all-zero or non-finite range).
void choose_quantization(RowQuant* r);
// One row's range, parameters and values (stored + the config's input offset), kpad bytes.
RowQuant quantize_row(const QD8GemmConfig& cfg, const float* x, std::size_t k, std::size_t kpad,
                      std::int8_t* q);
// Rows i of acc (ldacc) with parameters rq[i * rq_step] into y (ldy), cols columns.
void dequantize(const QD8GemmConfig& cfg, std::size_t rows, std::size_t cols,
                const std::int32_t* acc, std::size_t ldacc, const RowQuant* rq, std::size_t rq_step,
                const float* wscale, const std::int32_t* wsum, const float* bias, float* y,
                std::size_t ldy);

// y = clamp(dequant(quant(t) U_q^T) + bias), t = dequant(quant(x) V_q^T): the rank-sized
// intermediate is requantized per row inside the call, block by block, never leaving the cache.
void qd8_lowrank_gemm(const QD8GemmConfig& config, std::size_t m, const float* x, std::size_t ldx,
                      const QuantizedOperand& v, const QuantizedOperand& u, float* y,
                      std::size_t ldy, const OutputClamp& clamp);

}  // namespace lrk
