// Recurrent layers (LSTM, GRU) and embedding tables on the GEMM engine (recurrent.h). The driver
// is shared and free of intrinsics: the GEMMs are gemm()/lowrank_gemm(), the gate math is the
// active ISA's f32-rnn cell kernel.
#include "lrkernels/recurrent.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "lrkernels/dispatch.h"
#include "lrkernels/fp_mode.h"

namespace lrk {
namespace {

// Input projections of this many bytes per block of time steps: large enough for the GEMM to run
// at full width (several steps of one row each at batch 1), small enough to stay in L2 until the
// steps consume it.
constexpr std::size_t kGateBlockBytes = std::size_t(256) << 10;
// Rows an embedding lookup gathers per GEMM.
constexpr std::size_t kEmbeddingRowBlock = 256;
// A sequence uses more than one thread only when one step's recurrent projection is worth
// splitting: this many flops (several hand-offs' worth per thread), or this many bytes of weights
// (a memory-bound GEMV streams faster from two cores' caches). Measured on 2 cores: below both,
// 2 threads were 0.84-0.87x of 1 (H=256 batch 16 rank 64, H=512 batch 1 rank 128).
constexpr double kStepFlopsForThreads = 4e6;
constexpr std::size_t kStepBytesForThreads = std::size_t(2) << 20;

void check_factor(const Factor& f, const std::string& what) {
  if (f.shape.size() != 2) {
    throw std::invalid_argument(what + " must be 2-D, got shape " + shape_str(f.shape));
  }
  if (f.shape[0] == 0 || f.shape[1] == 0) {
    throw std::invalid_argument(what + " must not be empty, got shape " + shape_str(f.shape));
  }
  if (f.data.size() != checked_bytes(f.shape[0], f.shape[1], what.c_str())) {
    throw std::invalid_argument(what + ": " + std::to_string(f.data.size()) + " values for shape " +
                                shape_str(f.shape));
  }
}

// Checks {W} or {U, V} and names the factors what, what_U, what_V.
void check_matrix(MatrixFactors& m, const std::string& what) {
  if (m.factors.size() == 1) {
    m.factors[0].name = what;
    check_factor(m.factors[0], what);
    return;
  }
  if (m.factors.size() != 2) {
    throw std::invalid_argument(what + " must be one dense matrix or a pair (U, V), got " +
                                std::to_string(m.factors.size()) + " factors");
  }
  m.factors[0].name = what + "_U";
  m.factors[1].name = what + "_V";
  check_factor(m.factors[0], m.factors[0].name);
  check_factor(m.factors[1], m.factors[1].name);
  if (m.factors[0].shape[1] != m.factors[1].shape[0]) {
    throw std::invalid_argument("rank mismatch: " + what + "_U has shape " +
                                shape_str(m.factors[0].shape) + " (rows, rank) but " + what +
                                "_V has shape " + shape_str(m.factors[1].shape) + " (rank, cols)");
  }
}

std::size_t times(std::size_t a, std::size_t b, const char* what) {
  return checked_bytes(a, b, what);  // overflow-checked product
}

}  // namespace

// ---- projections --------------------------------------------------------------------------------

Projection::Projection(const MatrixFactors& m, const float* bias)
    : rows_(m.rows()), cols_(m.cols()) {
  if (m.low_rank()) {
    const Factor &u = m.factors[0], &v = m.factors[1];
    first_ = std::make_unique<WeightOperand>(v.data.data(), v.shape[0], v.shape[1], nullptr);
    second_ = std::make_unique<WeightOperand>(u.data.data(), u.shape[0], u.shape[1], bias);
  } else {
    const Factor& w = m.factors[0];
    first_ = std::make_unique<WeightOperand>(w.data.data(), w.shape[0], w.shape[1], bias);
  }
}

std::size_t Projection::macs() const {
  return first_->n() * first_->k() + (second_ ? second_->n() * second_->k() : 0);
}

void Projection::run(const KernelSet& ks, std::size_t m, const float* x, std::size_t ldx, float* y,
                     std::size_t ldy) const {
  const F32GemmConfig& config = *ks.f32_gemm;
  if (second_) {
    lowrank_gemm(m, x, ldx, first_->packed_for(config), second_->packed_for(config), y, ldy);
  } else {
    gemm(m, x, ldx, first_->packed_for(config), y, ldy);
  }
}

// ---- recurrent layers ---------------------------------------------------------------------------

RecurrentLayer::RecurrentLayer(CellKind cell, MatrixFactors ih, MatrixFactors hh,
                               std::vector<float> bias_ih, std::vector<float> bias_hh)
    : cell_(cell), ih_(std::move(ih)), hh_(std::move(hh)) {
  check_matrix(ih_, "weight_ih");
  check_matrix(hh_, "weight_hh");
  const std::size_t g = gates();
  const char* gate_names = cell == CellKind::lstm ? "4 * hidden_size (gates i, f, g, o)"
                                                  : "3 * hidden_size (gates r, z, n)";
  const std::size_t gh = ih_.rows();
  if (gh % g != 0) {
    throw std::invalid_argument("weight_ih has " + std::to_string(gh) + " rows, which must be " +
                                gate_names);
  }
  hidden_ = gh / g;
  input_size_ = ih_.cols();
  if (hh_.rows() != gh || hh_.cols() != hidden_) {
    throw std::invalid_argument(
        "weight_hh must be (" + std::to_string(gh) + ", " + std::to_string(hidden_) +
        ") to match weight_ih of " + std::to_string(gh) +
        " rows (hidden_size=" + std::to_string(hidden_) + "), got (" + std::to_string(hh_.rows()) +
        ", " + std::to_string(hh_.cols()) + ")");
  }
  auto check_bias = [&](const std::vector<float>& b, const char* name) {
    if (!b.empty() && b.size() != gh) {
      throw std::invalid_argument(std::string(name) + " must have shape (" + std::to_string(gh) +
                                  ",), got " + std::to_string(b.size()) + " values");
    }
  };
  check_bias(bias_ih, "bias_ih");
  check_bias(bias_hh, "bias_hh");
  bias_ih_ = std::move(bias_ih);
  bias_hh_ = std::move(bias_hh);
  proj_ih_ = std::make_unique<Projection>(ih_, bias_ih_.empty() ? nullptr : bias_ih_.data());
  proj_hh_ = std::make_unique<Projection>(hh_, bias_hh_.empty() ? nullptr : bias_hh_.data());
}

void RecurrentLayer::run(std::size_t steps, std::size_t batch, const float* x, std::size_t ldx,
                         const float* h0, const float* c0, bool reverse, float* out,
                         std::size_t ldo, float* h_n, float* c_n) const {
  const std::size_t hid = hidden_, gh = gates() * hidden_;
  const bool lstm = cell_ == CellKind::lstm;
  const std::size_t state = times(batch, hid, "state");
  if (ldx < input_size_ || ldo < hid) {
    throw std::invalid_argument("recurrent layer: row strides ldx=" + std::to_string(ldx) +
                                ", ldo=" + std::to_string(ldo) +
                                " below input_size=" + std::to_string(input_size_) +
                                " / hidden_size=" + std::to_string(hid));
  }
  const std::size_t rows = times(steps, batch, "sequence");
  times(times(rows, ldx, "input"), sizeof(float), "input");
  times(times(rows, ldo, "output"), sizeof(float), "output");
  if (state != 0 && (h_n == nullptr || (lstm && c_n == nullptr))) {
    throw std::invalid_argument("recurrent layer: null final-state output");
  }
  if (rows != 0 && (x == nullptr || out == nullptr)) {
    throw std::invalid_argument("recurrent layer: null input or output");
  }
  if (state == 0) return;

  const ScopedFlushDenormals ftz;  // see fp_mode.h
  const KernelSet& ks = active_kernel_set();
  struct Trim {  // also when a stage throws
    ~Trim() { trim_thread_scratch(); }
  } trim;
  const bool split = 2.0 * double(batch) * double(proj_hh_->macs()) >= kStepFlopsForThreads ||
                     proj_hh_->macs() * sizeof(float) >= kStepBytesForThreads;
  const ScopedThreadCap cap(split ? SIZE_MAX : 1);

  // Workspace: [gate pre-activations of a block of steps][recurrent gates][c][zero h0].
  const std::size_t step_floats = times(batch, gh, "gates");
  const std::size_t block =
      std::max<std::size_t>(1, std::min(steps, kGateBlockBytes / (step_floats * sizeof(float))));
  const std::size_t gx_floats = times(block, step_floats, "gates");
  std::size_t total = gx_floats + step_floats;
  const std::size_t c_at = total;
  if (lstm) total += state;
  const std::size_t zero_at = total;
  if (h0 == nullptr) total += state;
  float* ws = thread_workspace<float>(total);
  float* gx = ws;
  float* gates_h = ws + gx_floats;
  float* c = ws + c_at;
  if (lstm) {
    if (c0 != nullptr) {
      std::memcpy(c, c0, state * sizeof(float));
    } else {
      std::fill(c, c + state, 0.0f);
    }
  }
  const float* h_prev = h0;
  std::size_t ld_prev = hid;
  if (h0 == nullptr) {
    std::fill(ws + zero_at, ws + zero_at + state, 0.0f);
    h_prev = ws + zero_at;
  }

  for (std::size_t s0 = 0; s0 < steps; s0 += block) {
    const std::size_t n = std::min(block, steps - s0);
    const std::size_t first = reverse ? steps - s0 - n : s0;  // lowest position of the block
    proj_ih_->run(ks, n * batch, x + first * batch * ldx, ldx, gx, gh);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t t = reverse ? steps - 1 - (s0 + i) : s0 + i;
      const float* gx_t = gx + (t - first) * step_floats;
      float* h_t = out + t * batch * ldo;
      proj_hh_->run(ks, batch, h_prev, ld_prev, gates_h, gh);
      if (lstm) {
        ks.f32_rnn->lstm_cell(batch, hid, gx_t, gh, gates_h, gh, c, hid, h_t, ldo);
      } else {
        ks.f32_rnn->gru_cell(batch, hid, gx_t, gh, gates_h, gh, h_prev, ld_prev, h_t, ldo);
      }
      h_prev = h_t;
      ld_prev = ldo;
    }
  }
  for (std::size_t b = 0; b < batch; ++b) {
    std::memcpy(h_n + b * hid, h_prev + b * ld_prev, hid * sizeof(float));
  }
  if (lstm) std::memcpy(c_n, c, state * sizeof(float));
  record_used_isa(ks.isa);
}

// ---- embedding tables ---------------------------------------------------------------------------

EmbeddingTable::EmbeddingTable(MatrixFactors factors, std::int64_t padding_idx)
    : m_(std::move(factors)) {
  check_matrix(m_, "table");
  if (m_.low_rank()) {
    m_.factors[0].name = "A";
    m_.factors[1].name = "B";
  }
  num_ = m_.rows();
  dim_ = m_.cols();
  if (padding_idx < -1 || (padding_idx >= 0 && static_cast<std::uint64_t>(padding_idx) >= num_)) {
    throw std::invalid_argument("padding_idx=" + std::to_string(padding_idx) +
                                " is out of range for num_embeddings=" + std::to_string(num_));
  }
  padding_idx_ = padding_idx;
  if (m_.low_rank()) {
    const Factor& b = m_.factors[1];  // (r, dim): the GEMM wants W = B^T (dim x r)
    const std::size_t r = b.shape[0];
    std::vector<float> bt(times(dim_, r, "B"));
    for (std::size_t i = 0; i < r; ++i) {
      for (std::size_t j = 0; j < dim_; ++j) bt[j * r + i] = b.data[i * dim_ + j];
    }
    bt_ = std::make_unique<WeightOperand>(std::move(bt), dim_, r, nullptr);
  }
}

void EmbeddingTable::lookup(const void* indices, bool int64, std::size_t n, float* out) const {
  times(times(n, dim_, "output"), sizeof(float), "output");
  if (n == 0) return;
  if (indices == nullptr || out == nullptr) {
    throw std::invalid_argument("embedding: null indices or output");
  }
  // Each index is read from the caller's memory exactly once, checked, and kept in the workspace:
  // the caller's array may change under us (the GIL is released), and a second read could then
  // fetch an unchecked value. Rows of the padding index are marked kPadding.
  const std::size_t gather_floats =
      m_.low_rank() ? times(std::min(n, kEmbeddingRowBlock), rank(), "gather") : 0;
  const std::size_t idx_bytes = times(n, sizeof(std::size_t), "indices");
  char* ws = static_cast<char*>(
      thread_workspace_bytes(idx_bytes + times(gather_floats, sizeof(float), "gather") + 64));
  std::size_t* rows_of = reinterpret_cast<std::size_t*>(ws);
  float* gathered = reinterpret_cast<float*>(ws + (idx_bytes + 63) / 64 * 64);
  constexpr std::size_t kPadding = SIZE_MAX;
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t v = int64 ? static_cast<const volatile std::int64_t*>(indices)[i]
                                 : static_cast<const volatile std::int32_t*>(indices)[i];
    if (v < 0 || static_cast<std::uint64_t>(v) >= num_) {
      throw std::invalid_argument(
          "index " + std::to_string(v) + " at position " + std::to_string(i) +
          " is out of range for an embedding of num_embeddings=" + std::to_string(num_) +
          " (valid: 0 to " + std::to_string(num_ - 1) + ")");
    }
    rows_of[i] = v == padding_idx_ ? kPadding : static_cast<std::size_t>(v);
  }
  const ScopedFlushDenormals ftz;
  const KernelSet& ks = active_kernel_set();
  struct Trim {
    ~Trim() { trim_thread_scratch(); }
  } trim;
  const std::size_t row_bytes = dim_ * sizeof(float);
  if (!m_.low_rank()) {
    const float* table = m_.factors[0].data.data();
    for (std::size_t i = 0; i < n; ++i) {
      if (rows_of[i] == kPadding) {
        std::memset(out + i * dim_, 0, row_bytes);
      } else {
        std::memcpy(out + i * dim_, table + rows_of[i] * dim_, row_bytes);
      }
    }
    record_used_isa(ks.isa);
    return;
  }
  const std::size_t r = rank();
  const float* a = m_.factors[0].data.data();
  const PackedWeights& bt = bt_->packed_for(*ks.f32_gemm);
  for (std::size_t i0 = 0; i0 < n; i0 += kEmbeddingRowBlock) {
    const std::size_t m = std::min(kEmbeddingRowBlock, n - i0);
    for (std::size_t i = 0; i < m; ++i) {
      const std::size_t row = rows_of[i0 + i];
      if (row == kPadding) {
        std::fill(gathered + i * r, gathered + (i + 1) * r, 0.0f);
      } else {
        std::memcpy(gathered + i * r, a + row * r, r * sizeof(float));
      }
    }
    gemm(m, gathered, r, bt, out + i0 * dim_, dim_);
  }
  if (padding_idx_ >= 0) {  // exactly zero, whatever B holds (0 * inf would be NaN)
    for (std::size_t i = 0; i < n; ++i) {
      if (rows_of[i] == kPadding) std::memset(out + i * dim_, 0, row_bytes);
    }
  }
  record_used_isa(ks.isa);
}

}  // namespace lrk
