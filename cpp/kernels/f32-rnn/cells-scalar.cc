// The LSTM and GRU cell updates (cells-generic.h) with the baseline flags (SSE2 on x86-64, NEON on
// aarch64, VFP on armv7 when the NEON row is not built or not chosen).
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#define LRK_RNN_VECTOR_BYTES 16
#include "cells-generic.h"
}  // namespace

extern const F32LstmCellFn f32_rnn_lstm_cell__scalar = lstm_cell;
extern const F32GruCellFn f32_rnn_gru_cell__scalar = gru_cell;

}  // namespace lrk
