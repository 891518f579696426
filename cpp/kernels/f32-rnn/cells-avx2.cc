// The LSTM and GRU cell updates (cells-generic.h) vectorized by the compiler with the avx2 flags.
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#define LRK_RNN_VECTOR_BYTES 32
#include "cells-generic.h"
}  // namespace

extern const F32LstmCellFn f32_rnn_lstm_cell__avx2 = lstm_cell;
extern const F32GruCellFn f32_rnn_gru_cell__avx2 = gru_cell;

}  // namespace lrk
