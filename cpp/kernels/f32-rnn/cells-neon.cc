// The LSTM and GRU cell updates (cells-generic.h) vectorized by the compiler with the neon flags.
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#define LRK_RNN_VECTOR_BYTES 16
#include "cells-generic.h"
}  // namespace

extern const F32LstmCellFn f32_rnn_lstm_cell__neon = lstm_cell;
extern const F32GruCellFn f32_rnn_gru_cell__neon = gru_cell;

}  // namespace lrk
