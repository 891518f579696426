// Recurrent layers (LSTM, GRU) and embedding tables, dense or factorized, on the GEMM engine.
//
// A recurrent layer runs a whole sequence per call (one layer, one direction): the input
// projections W_ih x + b_ih of a block of time steps as one GEMM (a low-rank pair fused in
// lowrank_gemm), then per step the recurrent projection W_hh h + b_hh of the batch (a GEMV at
// batch 1) and the cell kernel (gate nonlinearities and state update) of the active ISA. Gates are
// stacked as torch stacks them (LSTM i, f, g, o; GRU r, z, n), so torch's weights map directly.
// Every precondition is checked at creation and per call; std::invalid_argument names the shapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lrkernels/layer.h"

namespace lrk {

enum class CellKind { lstm, gru };

// One weight matrix of a layer: dense W (n x k) or the low-rank pair U (n x r), V (r x k).
struct MatrixFactors {
  std::vector<Factor> factors;  // {W} or {U, V}
  bool low_rank() const { return factors.size() == 2; }
  std::size_t rows() const { return factors[0].shape[0]; }
  std::size_t cols() const { return factors.back().shape[1]; }
  std::size_t rank() const { return low_rank() ? factors[0].shape[1] : 0; }  // 0: dense
};

// x -> W x + b as one or two packed GEMM stages.
class Projection {
 public:
  // Borrows m's data and bias: both must outlive the projection.
  Projection(const MatrixFactors& m, const float* bias);
  std::size_t rows() const { return rows_; }
  std::size_t cols() const { return cols_; }
  // Multiply-adds per input row (= weight elements read).
  std::size_t macs() const;
  // y (m x rows, row stride ldy) = x (m x cols, row stride ldx) W^T + b on the kernel set's GEMM.
  void run(const KernelSet& ks, std::size_t m, const float* x, std::size_t ldx, float* y,
           std::size_t ldy) const;

 private:
  std::size_t rows_, cols_;
  std::unique_ptr<WeightOperand> first_, second_;  // second_: U of a low-rank pair
};

class RecurrentLayer {
 public:
  // ih: (G*H, input_size) dense or factored; hh: (G*H, H); G = 4 (LSTM) or 3 (GRU). Biases are
  // empty (zeros) or G*H long. Shapes and ranks are checked here.
  RecurrentLayer(CellKind cell, MatrixFactors ih, MatrixFactors hh, std::vector<float> bias_ih,
                 std::vector<float> bias_hh);
  CellKind cell() const { return cell_; }
  std::size_t gates() const { return cell_ == CellKind::lstm ? 4 : 3; }
  std::size_t input_size() const { return input_size_; }
  std::size_t hidden_size() const { return hidden_; }
  const MatrixFactors& ih() const { return ih_; }
  const MatrixFactors& hh() const { return hh_; }
  const std::vector<float>& bias_ih() const { return bias_ih_; }
  const std::vector<float>& bias_hh() const { return bias_hh_; }

  // Runs `steps` time steps of `batch` rows. x: steps * batch rows of input_size floats (row stride
  // ldx >= input_size), position t's rows at x + t * batch * ldx. h0, c0: batch x H contiguous,
  // nullptr for zeros (c0: LSTM only). reverse: positions steps-1 down to 0. out: position t's
  // hidden states at out + t * batch * ldo (ldo >= H). h_n, c_n (c_n: LSTM only): batch x H
  // contiguous, the state after the last processed step (h0/c0 when steps == 0).
  void run(std::size_t steps, std::size_t batch, const float* x, std::size_t ldx, const float* h0,
           const float* c0, bool reverse, float* out, std::size_t ldo, float* h_n,
           float* c_n) const;

 private:
  CellKind cell_;
  std::size_t input_size_ = 0, hidden_ = 0;
  MatrixFactors ih_, hh_;
  std::vector<float> bias_ih_, bias_hh_;
  std::unique_ptr<Projection> proj_ih_, proj_hh_;
};

// An embedding table E (num x dim), dense or E = A B with A (num x r), B (r x dim). A lookup
// gathers the rows of A (or E) and, when factored, multiplies them by B in one GEMM.
class EmbeddingTable {
 public:
  // factors: {table} or {A, B}. padding_idx: -1 for none, else its rows come out exactly zero.
  EmbeddingTable(MatrixFactors factors, std::int64_t padding_idx);
  std::size_t num_embeddings() const { return num_; }
  std::size_t embedding_dim() const { return dim_; }
  std::size_t rank() const { return m_.low_rank() ? m_.factors[0].shape[1] : 0; }
  std::int64_t padding_idx() const { return padding_idx_; }
  const MatrixFactors& factors() const { return m_; }
  // out (n x dim, contiguous) = the rows of `indices` (n integers, int32 or int64). Every index is
  // checked before anything is read: std::invalid_argument names the first bad one and its
  // position.
  void lookup(const void* indices, bool indices_are_int64, std::size_t n, float* out) const;

 private:
  MatrixFactors m_;
  std::size_t num_ = 0, dim_ = 0;
  std::int64_t padding_idx_ = -1;
  std::unique_ptr<WeightOperand> bt_;  // B^T (dim x r), owned copy: the GEMM's packed weights
};

}  // namespace lrk
