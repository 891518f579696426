// Every micro-kernel this library has, by name: <dtype>_<op>_<tile>__<isa>, defined in
// cpp/kernels/<dtype>-<op>/<tile>-<isa>.cc. Only those whose ISA is compiled into the build exist;
// the family configs (cpp/src/configs/) reference them under LRK_HAVE_<ISA>.
#pragma once

#include "lrkernels/microfnptr.h"

namespace lrk {

// f32 GEMM, one entry per row count: table[r] computes an r x NR tile (slot 0 unused).
extern const F32GemmUkernelFn f32_gemm_4x8__scalar[5];
extern const F32GemmUkernelFn f32_gemm_6x16__avx2[7];
extern const F32GemmUkernelFn f32_gemm_8x32__avx512[9];
extern const F32GemmUkernelFn f32_gemm_12x16__avx512[13];
extern const F32GemmUkernelFn f32_gemm_8x8__aarch64_neon[9];
extern const F32GemmUkernelFn f32_gemm_4x8__aarch32_neon[5];

// f16w GEMM (f32 activations, fp16 weights): the f32 contract, fp16 panels.
extern const F32GemmUkernelFn f16w_gemm_4x8__scalar[5];
extern const F32GemmUkernelFn f16w_gemm_6x16__avx2[7];
extern const F32GemmUkernelFn f16w_gemm_8x32__avx512[9];
extern const F32GemmUkernelFn f16w_gemm_12x16__avx512[13];
extern const F32GemmUkernelFn f16w_gemm_8x8__aarch64_neon[9];
extern const F32GemmUkernelFn f16w_gemm_4x8__aarch32_neon[5];
// f16 GEMM: the f16w contract with fp16 arithmetic (ARMv8.2 FP16, aarch64).
extern const F32GemmUkernelFn f16_gemm_4x16__neonfp16arith[5];

// qd8-f32-qc8w GEMM (int8 dot products, K in groups of 4).
extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_4x4c4__scalar[5];
extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_4x8c4__avx2[5];
extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_8x8c4__avxvnni[9];
extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_8x32c4__avx512vnni[9];
extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_8x8c4__neondot[9];
extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_4x8c4__aarch64_neon[5];
extern const QD8GemmUkernelFn qd8_f32_qc8w_gemm_2x8c4__aarch32_neon[3];

// qd8 conversions: input range and quantization, dequantization (convert-generic.h per ISA).
#define LRK_DECLARE_QD8_CONVERT(isa)                      \
  extern const QD8RangeFn qd8_convert_range__##isa;       \
  extern const QD8QuantizeFn qd8_convert_quantize__##isa; \
  extern const QD8DequantizeFn qd8_convert_dequantize__##isa;
LRK_DECLARE_QD8_CONVERT(scalar)
LRK_DECLARE_QD8_CONVERT(neon)
LRK_DECLARE_QD8_CONVERT(avx2)
LRK_DECLARE_QD8_CONVERT(avx512)
#undef LRK_DECLARE_QD8_CONVERT

// f32 transposes.
extern const F32TransposeFn f32_transpose_8x8__scalar;
extern const F32TransposeFn f32_transpose_8x8__avx2;
extern const F32TransposeFn f32_transpose_8x8__avx512;
extern const F32TransposeFn f32_transpose_4x4__neon;

// f32 depthwise taps.
extern const F32DwconvFn f32_dwconv_taps__scalar;
extern const F32DwconvFn f32_dwconv_taps__avx2;
extern const F32DwconvFn f32_dwconv_taps__avx512;
extern const F32DwconvFn f32_dwconv_taps__neon;

// f32 Winograd F(2x2, 3x3) transforms.
extern const F32WinogradInputFn f32_winograd_input_2x2_3x3__scalar;
extern const F32WinogradInputFn f32_winograd_input_2x2_3x3__avx2;
extern const F32WinogradInputFn f32_winograd_input_2x2_3x3__avx512;
extern const F32WinogradInputFn f32_winograd_input_2x2_3x3__neon;
extern const F32WinogradOutputFn f32_winograd_output_2x2_3x3__scalar;
extern const F32WinogradOutputFn f32_winograd_output_2x2_3x3__avx2;
extern const F32WinogradOutputFn f32_winograd_output_2x2_3x3__avx512;
extern const F32WinogradOutputFn f32_winograd_output_2x2_3x3__neon;

// f32 output clamps.
extern const F32ClampFn f32_clamp_tile__scalar;
extern const F32ClampFn f32_clamp_tile__avx2;
extern const F32ClampFn f32_clamp_tile__avx512;
extern const F32ClampFn f32_clamp_tile__neon;

// f32 recurrent cells (LSTM, GRU).
extern const F32LstmCellFn f32_rnn_lstm_cell__scalar;
extern const F32LstmCellFn f32_rnn_lstm_cell__avx2;
extern const F32LstmCellFn f32_rnn_lstm_cell__avx512;
extern const F32LstmCellFn f32_rnn_lstm_cell__neon;
extern const F32GruCellFn f32_rnn_gru_cell__scalar;
extern const F32GruCellFn f32_rnn_gru_cell__avx2;
extern const F32GruCellFn f32_rnn_gru_cell__avx512;
extern const F32GruCellFn f32_rnn_gru_cell__neon;

// FMA peak probes and the flops one iteration performs.
extern const FmaProbeFn f32_fma_probe__avx2;
extern const FmaProbeFn f32_fma_probe__avx512;
extern const FmaProbeFn f32_fma_probe__neon;
extern const std::size_t f32_fma_probe_flops__avx2;
extern const std::size_t f32_fma_probe_flops__avx512;
extern const std::size_t f32_fma_probe_flops__neon;

}  // namespace lrk
