// The small families: f32 transposes, depthwise taps and Winograd transforms (the convolutions'
// helpers), output clamps
// (every layer's last stage), recurrent cells (LSTM/GRU gate updates) and the FMA peak probes of
// the benchmarks. One row per ISA, chosen from the CPU's features.
#include "config_table.h"
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

// The helper kernels of each ISA: a transpose and a depthwise-taps loop (the convolutions'), an
// output clamp (every layer's).
struct HelperRow {
  Isa isa;
  unsigned features;
  const char* transpose_name;
  F32TransposeFn transpose;
  const char* dwconv_name;
  F32DwconvFn dwconv;
  const char* winograd_name;
  F32WinogradInputFn winograd_input;
  F32WinogradOutputFn winograd_output;
  const char* clamp_name;
  F32ClampFn clamp;
  const char* rnn_name;
  F32LstmCellFn lstm_cell;
  F32GruCellFn gru_cell;
};

const HelperRow kHelperRows[] = {
    {Isa::scalar, 0, "f32-transpose-8x8-scalar", f32_transpose_8x8__scalar,
     "f32-dwconv-taps-scalar", f32_dwconv_taps__scalar, "f32-winograd-2x2-3x3-scalar",
     f32_winograd_input_2x2_3x3__scalar, f32_winograd_output_2x2_3x3__scalar,
     "f32-clamp-tile-scalar", f32_clamp_tile__scalar, "f32-rnn-cells-scalar",
     f32_rnn_lstm_cell__scalar, f32_rnn_gru_cell__scalar},
#if defined(LRK_HAVE_NEON)
    {Isa::neon, kCpuNeon, "f32-transpose-4x4-neon", f32_transpose_4x4__neon, "f32-dwconv-taps-neon",
     f32_dwconv_taps__neon, "f32-winograd-2x2-3x3-neon", f32_winograd_input_2x2_3x3__neon,
     f32_winograd_output_2x2_3x3__neon, "f32-clamp-tile-neon", f32_clamp_tile__neon,
     "f32-rnn-cells-neon", f32_rnn_lstm_cell__neon, f32_rnn_gru_cell__neon},
#endif
#if defined(LRK_HAVE_AVX2)
    {Isa::avx2, kCpuAvx2Fma, "f32-transpose-8x8-avx2", f32_transpose_8x8__avx2,
     "f32-dwconv-taps-avx2", f32_dwconv_taps__avx2, "f32-winograd-2x2-3x3-avx2",
     f32_winograd_input_2x2_3x3__avx2, f32_winograd_output_2x2_3x3__avx2, "f32-clamp-tile-avx2",
     f32_clamp_tile__avx2, "f32-rnn-cells-avx2", f32_rnn_lstm_cell__avx2, f32_rnn_gru_cell__avx2},
#endif
#if defined(LRK_HAVE_AVX512)
    {Isa::avx512, kCpuAvx512f, "f32-transpose-8x8-avx512", f32_transpose_8x8__avx512,
     "f32-dwconv-taps-avx512", f32_dwconv_taps__avx512, "f32-winograd-2x2-3x3-avx512",
     f32_winograd_input_2x2_3x3__avx512, f32_winograd_output_2x2_3x3__avx512,
     "f32-clamp-tile-avx512", f32_clamp_tile__avx512, "f32-rnn-cells-avx512",
     f32_rnn_lstm_cell__avx512, f32_rnn_gru_cell__avx512},
#endif
};

// The helper families come from the same rows, so they are filled together.
struct HelperTables {
  ConfigTable<F32TransposeConfig> transpose;
  ConfigTable<F32DwconvConfig> dwconv;
  ConfigTable<F32WinogradConfig> winograd;
  ConfigTable<F32ClampConfig> clamp;
  ConfigTable<F32RnnConfig> rnn;
};

const HelperTables& helper_tables() {
  static const HelperTables* tables = [] {
    auto* t = new HelperTables();  // kept for the life of the process
    for (const HelperRow& r : kHelperRows) {
      F32TransposeConfig& tc = t->transpose.add(r.isa);
      tc.name = r.transpose_name;
      tc.transpose = r.transpose;
      F32DwconvConfig& dc = t->dwconv.add(r.isa);
      dc.name = r.dwconv_name;
      dc.depthwise = r.dwconv;
      F32WinogradConfig& wc = t->winograd.add(r.isa);
      wc.name = r.winograd_name;
      wc.input = r.winograd_input;
      wc.output = r.winograd_output;
      wc.required_features = r.features;
      F32ClampConfig& cc = t->clamp.add(r.isa);
      cc.name = r.clamp_name;
      cc.clamp = r.clamp;
      F32RnnConfig& rc = t->rnn.add(r.isa);
      rc.name = r.rnn_name;
      rc.lstm_cell = r.lstm_cell;
      rc.gru_cell = r.gru_cell;
      tc.required_features = dc.required_features = cc.required_features = r.features;
      rc.required_features = r.features;
    }
    return t;
  }();
  return *tables;
}

// No scalar row: the compiler decides how scalar code is vectorized, so it has no meaningful peak.
void fill_fma_probe(ConfigTable<FmaProbeConfig>& t) {
  auto row = [&](Isa isa, const char* name, unsigned features, FmaProbeFn fn, std::size_t flops) {
    FmaProbeConfig& c = t.add(isa);
    c.name = name;
    c.required_features = features;
    c.probe = fn;
    c.flops_per_iteration = flops;
  };
  (void)row;
#if defined(LRK_HAVE_NEON)
  row(Isa::neon, "f32-fma-probe-neon", kCpuNeon, f32_fma_probe__neon, f32_fma_probe_flops__neon);
#endif
#if defined(LRK_HAVE_AVX2)
  row(Isa::avx2, "f32-fma-probe-avx2", kCpuAvx2Fma, f32_fma_probe__avx2, f32_fma_probe_flops__avx2);
#endif
#if defined(LRK_HAVE_AVX512)
  row(Isa::avx512, "f32-fma-probe-avx512", kCpuAvx512f, f32_fma_probe__avx512,
      f32_fma_probe_flops__avx512);
#endif
}

}  // namespace

const F32TransposeConfig* f32_transpose_config(Isa isa) {
  return helper_tables().transpose.get(isa);
}

const F32DwconvConfig* f32_dwconv_config(Isa isa) { return helper_tables().dwconv.get(isa); }

const F32WinogradConfig* f32_winograd_config(Isa isa) { return helper_tables().winograd.get(isa); }

const F32ClampConfig* f32_clamp_config(Isa isa) { return helper_tables().clamp.get(isa); }

const F32RnnConfig* f32_rnn_config(Isa isa) { return helper_tables().rnn.get(isa); }

const FmaProbeConfig* fma_probe_config(Isa isa) {
  static const auto& table = build_table<FmaProbeConfig>(fill_fma_probe);
  return table.get(isa);
}

}  // namespace lrk
