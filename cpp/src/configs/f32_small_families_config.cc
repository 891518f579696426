// The small families: f32 transposes and depthwise taps (the convolutions' helpers) and the FMA
// peak probes of the benchmarks. One row per ISA, chosen from the CPU's features.
#include "config_table.h"
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

// The convolutions' helper kernels of each ISA: a transpose and a depthwise-taps loop.
struct HelperRow {
  Isa isa;
  unsigned features;
  const char* transpose_name;
  F32TransposeFn transpose;
  const char* dwconv_name;
  F32DwconvFn dwconv;
};

const HelperRow kHelperRows[] = {
    {Isa::scalar, 0, "f32-transpose-8x8-scalar", f32_transpose_8x8__scalar,
     "f32-dwconv-taps-scalar", f32_dwconv_taps__scalar},
#if defined(LRK_HAVE_NEON)
    {Isa::neon, kCpuNeon, "f32-transpose-4x4-neon", f32_transpose_4x4__neon, "f32-dwconv-taps-neon",
     f32_dwconv_taps__neon},
#endif
#if defined(LRK_HAVE_AVX2)
    {Isa::avx2, kCpuAvx2Fma, "f32-transpose-8x8-avx2", f32_transpose_8x8__avx2,
     "f32-dwconv-taps-avx2", f32_dwconv_taps__avx2},
#endif
#if defined(LRK_HAVE_AVX512)
    {Isa::avx512, kCpuAvx512f, "f32-transpose-8x8-avx512", f32_transpose_8x8__avx512,
     "f32-dwconv-taps-avx512", f32_dwconv_taps__avx512},
#endif
};

void fill_transpose(ConfigTable<F32TransposeConfig>& t) {
  for (const HelperRow& r : kHelperRows) {
    F32TransposeConfig& c = t.add(r.isa);
    c.name = r.transpose_name;
    c.required_features = r.features;
    c.transpose = r.transpose;
  }
}

void fill_dwconv(ConfigTable<F32DwconvConfig>& t) {
  for (const HelperRow& r : kHelperRows) {
    F32DwconvConfig& c = t.add(r.isa);
    c.name = r.dwconv_name;
    c.required_features = r.features;
    c.depthwise = r.dwconv;
  }
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
  static const auto& table = build_table<F32TransposeConfig>(fill_transpose);
  return table.get(isa);
}

const F32DwconvConfig* f32_dwconv_config(Isa isa) {
  static const auto& table = build_table<F32DwconvConfig>(fill_dwconv);
  return table.get(isa);
}

const FmaProbeConfig* fma_probe_config(Isa isa) {
  static const auto& table = build_table<FmaProbeConfig>(fill_fma_probe);
  return table.get(isa);
}

}  // namespace lrk
