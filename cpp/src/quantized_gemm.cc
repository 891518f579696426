// The int8 (qd8-f32-qc8w) driver: per-row quantization of the inputs, the int8 GEMM stages on the
// family's micro-kernels, dequantization, bias and clamp, and the weight quantization done once
// at layer creation. Compiled without FMA contraction (CMakeLists.txt): each float operation here
// is one float32 rounding, in the order lrkernels.reference.qd8_linear performs them.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "lrkernels/quantized.h"
#include "lrkernels/threadpool.h"

namespace lrk {
namespace {

// Round to nearest, ties to even, for |v| < 2^22 (every value rounded here: x / scale within
// about +-383): adding and subtracting 1.5 * 2^23 leaves the integer part in the low mantissa
// bits under the default rounding mode. Unlike std::nearbyint it is two SSE2/NEON instructions
// (no libm call) and vectorizes; it gives the same result as nearbyint / numpy.rint there.
inline float round_even(float v) {
  const float magic = 12582912.0f;
  return (v + magic) - magic;
}

}  // namespace

QuantizedMatrix quantize_weights(const float* w, std::size_t n, std::size_t k) {
  QuantizedMatrix m;
  m.n = n;
  m.k = k;
  m.q.resize(n * k);
  m.scale.resize(n);
  m.wsum.resize(n);
  for (std::size_t j = 0; j < n; ++j) {
    const float* row = w + j * k;
    float amax = 0.0f;
    for (std::size_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(row[i]));
    const float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
    std::int32_t sum = 0;
    for (std::size_t i = 0; i < k; ++i) {
      const float r = std::nearbyint(row[i] / scale);
      // Non-finite weights are refused before this (check_reduced_precision_weights).
      const int q = r > 127.0f ? 127 : (r < -127.0f ? -127 : (r == r ? static_cast<int>(r) : 0));
      m.q[j * k + i] = static_cast<std::int8_t>(q);
      sum += q;
    }
    m.scale[j] = scale;
    m.wsum[j] = sum;
  }
  return m;
}

void rebalance_rank_components(std::vector<float>& u, std::size_t out, std::vector<float>& v,
                               std::size_t r, std::size_t in) {
  for (std::size_t j = 0; j < r; ++j) {
    float vmax = 0.0f, umax = 0.0f;
    for (std::size_t i = 0; i < in; ++i) vmax = std::max(vmax, std::fabs(v[j * in + i]));
    for (std::size_t o = 0; o < out; ++o) umax = std::max(umax, std::fabs(u[o * r + j]));
    if (!(vmax > 0.0f) || !(umax > 0.0f) || !std::isfinite(vmax) || !std::isfinite(umax)) continue;
    const int ev = std::ilogb(vmax), eu = std::ilogb(umax);
    const int d = ev - eu;
    const int s = d >= 0 ? d / 2 : -((-d + 1) / 2);  // floor(d / 2)
    if (s == 0) continue;
    for (std::size_t i = 0; i < in; ++i) v[j * in + i] = std::ldexp(v[j * in + i], -s);
    for (std::size_t o = 0; o < out; ++o) u[o * r + j] = std::ldexp(u[o * r + j], s);
  }
}

QuantizedOperand::QuantizedOperand(const float* w, std::size_t n, std::size_t channels,
                                   std::size_t taps, const float* bias,
                                   const QD8GemmConfig* prepack)
    : channels_(channels), taps_(taps), bias_(bias) {
  if (w == nullptr || n == 0 || channels == 0 || taps == 0) {
    throw std::invalid_argument("quantized weight matrix must be non-empty");
  }
  if (channels * taps > kMaxQuantizedK) {
    throw std::invalid_argument("precision=\"int8\" supports at most " +
                                std::to_string(kMaxQuantizedK) + " inputs per output, got " +
                                std::to_string(channels * taps));
  }
  m_ = quantize_weights(w, n, channels * taps);
  if (prepack != nullptr) packed_for(*prepack);
}

const QuantizedOperand::Packed& QuantizedOperand::packed_for(const QD8GemmConfig& config) const {
  for (std::size_t i = 0; i < kMaxPacks; ++i) {
    const QD8GemmConfig* key = keys_[i].load(std::memory_order_acquire);
    if (key == &config) return *packs_[i];
    if (key == nullptr) break;
  }
  std::lock_guard<std::mutex> lock(pack_mutex_);
  for (std::size_t i = 0; i < kMaxPacks; ++i) {
    const QD8GemmConfig* key = keys_[i].load(std::memory_order_relaxed);
    if (key == &config) return *packs_[i];
    if (key != nullptr) continue;
    auto pk = std::make_unique<Packed>();
    const std::size_t nr = config.nr, n = m_.n, k = m_.k;
    pk->config = &config;
    pk->kgroups = (channels_ + 3) / 4;
    pk->panel_bytes = checked_bytes(taps_ * pk->kgroups * nr, 4, "packed int8 weights");
    const std::size_t panels = (n + nr - 1) / nr;
    pk->data.resize_bytes(checked_bytes(panels, pk->panel_bytes, "packed int8 weights"));
    std::int8_t* dst = pk->data.as<std::int8_t>();
    std::memset(dst, 0, panels * pk->panel_bytes);
    for (std::size_t p = 0; p < panels; ++p) {
      for (std::size_t jj = 0; jj < nr && p * nr + jj < n; ++jj) {
        const std::int8_t* row = m_.q.data() + (p * nr + jj) * k;
        for (std::size_t t = 0; t < taps_; ++t) {
          for (std::size_t c = 0; c < channels_; ++c) {
            const std::size_t g = c / 4, e = c % 4;
            dst[p * pk->panel_bytes + ((t * pk->kgroups + g) * nr + jj) * 4 + e] =
                row[t * channels_ + c];
          }
        }
      }
    }
    packs_[i] = std::move(pk);
    keys_[i].store(&config, std::memory_order_release);
    return *packs_[i];
  }
  throw std::logic_error("QuantizedOperand: more kernel configs than pack slots");
}

void choose_quantization(RowQuant* r) {
  r->scale = 1.0f;
  r->zero = 0;
  r->zero_range = true;
  const float scale = r->hi / 255.0f - r->lo / 255.0f;  // (hi - lo) / 255 without overflow
  // All zeros (or a range below the normal floats, or non-finite values): q = 0, scale 1.
  if (!r->finite || !(scale >= FLT_MIN)) return;
  const float inv = 1.0f / scale;
  const float zf = round_even(-128.0f - r->lo * inv);
  r->zero = zf < -128.0f ? -128 : (zf > 127.0f ? 127 : static_cast<int>(zf));
  r->scale = scale;
  r->zero_range = false;
}

RowQuant quantize_row(const QD8GemmConfig& cfg, const float* x, std::size_t k, std::size_t kpad,
                      std::int8_t* q) {
  RowQuant r;
  cfg.range(k, x, &r);
  choose_quantization(&r);
  cfg.quantize(k, kpad, x, &r, cfg.input_offset, q);
  return r;
}

void dequantize(const QD8GemmConfig& cfg, std::size_t rows, std::size_t cols,
                const std::int32_t* acc, std::size_t ldacc, const RowQuant* rq, std::size_t rq_step,
                const float* wscale, const std::int32_t* wsum, const float* bias, float* y,
                std::size_t ldy) {
  cfg.dequantize(rows, cols, acc, ldacc, rq, rq_step, cfg.input_offset, wscale, wsum, bias, y, ldy);
}

namespace {

// Rows [0, rows) of a block (quantized: qa, lda bytes per row) times panels [p0, p1) of w: int32
// sums into acc, then dequantized (and clamped) into y, one call per row over the whole column
// range (per-panel calls of nr columns cost more than the arithmetic at short K).
void block_panels(const QD8GemmConfig& cfg, const QuantizedOperand& w,
                  const QuantizedOperand::Packed& pk, std::size_t rows, const std::int8_t* qa,
                  std::size_t lda, const RowQuant* rq, std::size_t rq_step, std::size_t p0,
                  std::size_t p1, std::int32_t* acc, std::size_t ldacc, float* y, std::size_t ldy,
                  const OutputClamp& clamp) {
  const std::size_t nr = cfg.nr, mr = cfg.mr, n = w.n();
  if (p0 >= p1) return;
  for (std::size_t p = p0; p < p1; ++p) {
    const std::size_t col0 = p * nr, cols = std::min(nr, n - col0);
    for (std::size_t m0 = 0; m0 < rows; m0 += mr) {
      const std::size_t r = std::min(mr, rows - m0);
      const std::int8_t* a = qa + m0 * lda;
      cfg.ukernel[r](cols, pk.kgroups, 1, &a, lda, pk.panel(p), acc + m0 * ldacc + col0, ldacc);
    }
  }
  const std::size_t col0 = p0 * nr, cols = std::min(p1 * nr, n) - col0;
  dequantize(cfg, rows, cols, acc + col0, ldacc, rq, rq_step, w.scale() + col0, w.wsum() + col0,
             w.bias() ? w.bias() + col0 : nullptr, y + col0, ldy);
  clamp.apply(rows, cols, y + col0, ldy);
}

// One stage over a block of rows already quantized: threads split the panels.
void stage(const QD8GemmConfig& cfg, const QuantizedOperand& w, std::size_t rows,
           const std::int8_t* qa, std::size_t lda, const RowQuant* rq, std::size_t rq_step,
           std::int32_t* acc, float* y, std::size_t ldy, const OutputClamp& clamp) {
  const QuantizedOperand::Packed& pk = w.packed_for(cfg);
  const std::size_t panels = (w.n() + cfg.nr - 1) / cfg.nr;
  // An int8 MAC takes about a quarter of an f32 FMA's time, but a batch-1 call is bound by the
  // weight bytes, one per MAC: counting MACs as flops splits a 1280 x 1000 GEMV over two threads
  // (measured 1.0x -> see BENCHMARKS.md), and keeps calls under ~0.5 M MACs on one.
  const std::size_t threads =
      std::min(panels, threads_for_flops(1.0 * rows * w.n() * w.channels() * w.taps()));
  const std::size_t ldacc = w.n();
  parallel_for(threads, threads, [&](std::size_t part) {
    block_panels(cfg, w, pk, rows, qa, lda, rq, rq_step, panels * part / threads,
                 panels * (part + 1) / threads, acc, ldacc, y, ldy, clamp);
  });
}

std::size_t round_up(std::size_t v, std::size_t m) { return (v + m - 1) / m * m; }

// Per-thread scratch carved into 64-byte aligned pieces.
class Carver {
 public:
  void add(std::size_t bytes) { total_ += round_up(bytes, 64); }
  // In `workspace` (at least total() bytes, 64-byte aligned), or this thread's scratch.
  void start(void* workspace = nullptr) {
    base_ = static_cast<char*>(workspace != nullptr ? workspace : thread_scratch_bytes(total_));
  }
  template <class T>
  T* take(std::size_t count) {
    T* p = reinterpret_cast<T*>(base_ + used_);
    used_ += round_up(count * sizeof(T), 64);
    return p;
  }
  std::size_t total() const { return total_; }

 private:
  std::size_t total_ = 0, used_ = 0;
  char* base_ = nullptr;
};

constexpr std::size_t kBlockBudgetBytes = 512 * 1024;  // a row block's buffers stay in L2

std::size_t block_rows(std::size_t m, std::size_t mr, std::size_t bytes_per_row) {
  const std::size_t fit = std::max<std::size_t>(mr, kBlockBudgetBytes / bytes_per_row / mr * mr);
  return std::min(m, fit);
}

}  // namespace

std::size_t qd8_gemm_workspace_bytes(const QD8GemmConfig& cfg, std::size_t m, std::size_t k,
                                     std::size_t n) {
  const std::size_t lda = round_up(k, 4);
  const std::size_t mb = block_rows(m, cfg.mr, lda + n * 4 + sizeof(RowQuant));
  Carver c;
  c.add(mb * lda);
  c.add(mb * sizeof(RowQuant));
  c.add(mb * n * sizeof(std::int32_t));
  return c.total();
}

void qd8_gemm(const QD8GemmConfig& cfg, std::size_t m, const float* x, std::size_t ldx,
              const QuantizedOperand& w, float* y, std::size_t ldy, const OutputClamp& clamp,
              void* workspace, bool shared_quantization) {
  if (m == 0) return;
  if (w.taps() != 1) throw std::logic_error("qd8_gemm: a convolution operand");
  const std::size_t k = w.channels(), lda = round_up(k, 4), n = w.n();
  const std::size_t mb = block_rows(m, cfg.mr, lda + n * 4 + sizeof(RowQuant));
  Carver c;
  c.add(mb * lda);
  c.add(mb * sizeof(RowQuant));
  c.add(mb * n * sizeof(std::int32_t));
  c.start(workspace);
  std::int8_t* qa = c.take<std::int8_t>(mb * lda);
  RowQuant* rq = c.take<RowQuant>(mb);
  std::int32_t* acc = c.take<std::int32_t>(mb * n);
  RowQuant shared;
  if (shared_quantization) {  // one range over every row: one reduction, not one per row
    if (ldx == k) {
      cfg.range(m * k, x, &shared);
    } else {
      for (std::size_t i = 0; i < m; ++i) cfg.range(k, x + i * ldx, &shared);
    }
    choose_quantization(&shared);
  }
  for (std::size_t m0 = 0; m0 < m; m0 += mb) {
    const std::size_t rows = std::min(mb, m - m0);
    const float* xb = x + m0 * ldx;
    if (!shared_quantization) {
      for (std::size_t i = 0; i < rows; ++i) {
        rq[i] = quantize_row(cfg, xb + i * ldx, k, lda, qa + i * lda);
      }
    } else if (ldx == k && lda == k) {
      cfg.quantize(rows * k, rows * k, xb, &shared, cfg.input_offset, qa);
    } else {
      for (std::size_t i = 0; i < rows; ++i) {
        cfg.quantize(k, lda, xb + i * ldx, &shared, cfg.input_offset, qa + i * lda);
      }
    }
    stage(cfg, w, rows, qa, lda, shared_quantization ? &shared : rq, shared_quantization ? 0 : 1,
          acc, y + m0 * ldy, ldy, clamp);
  }
}

void qd8_lowrank_gemm(const QD8GemmConfig& cfg, std::size_t m, const float* x, std::size_t ldx,
                      const QuantizedOperand& v, const QuantizedOperand& u, float* y,
                      std::size_t ldy, const OutputClamp& clamp) {
  if (m == 0) return;
  const std::size_t k = v.channels(), r = v.n(), n = u.n();
  if (u.channels() != r || v.taps() != 1 || u.taps() != 1) {
    throw std::logic_error("qd8_lowrank_gemm: rank of U and V differ");
  }
  const std::size_t lda = round_up(k, 4), ldt = round_up(r, 16), ldqt = round_up(r, 4);
  const std::size_t per_row = lda + ldqt + 2 * sizeof(RowQuant) + 4 * ldt + 4 * std::max(r, n);
  const std::size_t mb = block_rows(m, cfg.mr, per_row);
  Carver c;
  c.add(mb * lda);
  c.add(mb * ldqt);
  c.add(2 * mb * sizeof(RowQuant));
  c.add(mb * ldt * sizeof(float));
  c.add(mb * std::max(r, n) * sizeof(std::int32_t));
  c.start();
  std::int8_t* qa = c.take<std::int8_t>(mb * lda);
  std::int8_t* qt = c.take<std::int8_t>(mb * ldqt);
  RowQuant* rq = c.take<RowQuant>(2 * mb);
  float* t = c.take<float>(mb * ldt);
  std::int32_t* acc = c.take<std::int32_t>(mb * std::max(r, n));
  for (std::size_t m0 = 0; m0 < m; m0 += mb) {
    const std::size_t rows = std::min(mb, m - m0);
    for (std::size_t i = 0; i < rows; ++i) {
      rq[i] = quantize_row(cfg, x + (m0 + i) * ldx, k, lda, qa + i * lda);
    }
    stage(cfg, v, rows, qa, lda, rq, 1, acc, t, ldt, OutputClamp());  // t = x V^T, rank-sized
    for (std::size_t i = 0; i < rows; ++i) {  // requantized per row while t is hot
      rq[mb + i] = quantize_row(cfg, t + i * ldt, r, ldqt, qt + i * ldqt);
    }
    stage(cfg, u, rows, qt, ldqt, rq + mb, 1, acc, y + m0 * ldy, ldy, clamp);
  }
}

}  // namespace lrk
