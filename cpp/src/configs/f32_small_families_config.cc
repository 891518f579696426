// The small families of the convolutions: f32 transposes and depthwise taps, and the FMA peak
// probes of the benchmarks. One row per ISA, chosen from the CPU's features.
#include <type_traits>

#include "lrkernels/kernel_config.h"
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

template <class Config>
const Config* if_supported(const Config* c) {
  return (c != nullptr && (cpu_feature_mask() & c->required_features) == c->required_features)
             ? c
             : nullptr;
}

template <class Config, class Fn>
Config make(const char* name, Isa isa, unsigned features, Fn fn) {
  Config c;
  c.name = name;
  c.isa = isa;
  c.required_features = features;
  if constexpr (std::is_same<Config, F32TransposeConfig>::value) c.transpose = fn;
  if constexpr (std::is_same<Config, F32DwconvConfig>::value) c.depthwise = fn;
  return c;
}

}  // namespace

const F32TransposeConfig* f32_transpose_config(Isa isa) {
  static const F32TransposeConfig scalar =
      make<F32TransposeConfig>("f32-transpose-8x8-scalar", Isa::scalar, 0, f32_transpose_8x8__scalar);
#if defined(LRK_HAVE_NEON)
  static const F32TransposeConfig neon =
      make<F32TransposeConfig>("f32-transpose-4x4-neon", Isa::neon, kCpuNeon, f32_transpose_4x4__neon);
#endif
#if defined(LRK_HAVE_AVX2)
  static const F32TransposeConfig avx2 =
      make<F32TransposeConfig>("f32-transpose-8x8-avx2", Isa::avx2, kCpuAvx2Fma, f32_transpose_8x8__avx2);
#endif
#if defined(LRK_HAVE_AVX512)
  static const F32TransposeConfig avx512 = make<F32TransposeConfig>(
      "f32-transpose-8x8-avx512", Isa::avx512, kCpuAvx512f, f32_transpose_8x8__avx512);
#endif
  switch (isa) {
    case Isa::scalar:
      return &scalar;
#if defined(LRK_HAVE_NEON)
    case Isa::neon:
      return if_supported(&neon);
#endif
#if defined(LRK_HAVE_AVX2)
    case Isa::avx2:
      return if_supported(&avx2);
#endif
#if defined(LRK_HAVE_AVX512)
    case Isa::avx512:
      return if_supported(&avx512);
#endif
    default:
      return nullptr;
  }
}

const F32DwconvConfig* f32_dwconv_config(Isa isa) {
  static const F32DwconvConfig scalar =
      make<F32DwconvConfig>("f32-dwconv-taps-scalar", Isa::scalar, 0, f32_dwconv_taps__scalar);
#if defined(LRK_HAVE_NEON)
  static const F32DwconvConfig neon =
      make<F32DwconvConfig>("f32-dwconv-taps-neon", Isa::neon, kCpuNeon, f32_dwconv_taps__neon);
#endif
#if defined(LRK_HAVE_AVX2)
  static const F32DwconvConfig avx2 =
      make<F32DwconvConfig>("f32-dwconv-taps-avx2", Isa::avx2, kCpuAvx2Fma, f32_dwconv_taps__avx2);
#endif
#if defined(LRK_HAVE_AVX512)
  static const F32DwconvConfig avx512 = make<F32DwconvConfig>(
      "f32-dwconv-taps-avx512", Isa::avx512, kCpuAvx512f, f32_dwconv_taps__avx512);
#endif
  switch (isa) {
    case Isa::scalar:
      return &scalar;
#if defined(LRK_HAVE_NEON)
    case Isa::neon:
      return if_supported(&neon);
#endif
#if defined(LRK_HAVE_AVX2)
    case Isa::avx2:
      return if_supported(&avx2);
#endif
#if defined(LRK_HAVE_AVX512)
    case Isa::avx512:
      return if_supported(&avx512);
#endif
    default:
      return nullptr;
  }
}

const FmaProbeConfig* fma_probe_config(Isa isa) {
  auto probe = [](const char* name, Isa i, unsigned features, FmaProbeFn fn, std::size_t flops) {
    FmaProbeConfig c;
    c.name = name;
    c.isa = i;
    c.required_features = features;
    c.probe = fn;
    c.flops_per_iteration = flops;
    return c;
  };
  (void)probe;
  switch (isa) {
#if defined(LRK_HAVE_NEON)
    case Isa::neon: {
      static const FmaProbeConfig c = probe("f32-fma-probe-neon", Isa::neon, kCpuNeon,
                                            f32_fma_probe__neon, f32_fma_probe_flops__neon);
      return if_supported(&c);
    }
#endif
#if defined(LRK_HAVE_AVX2)
    case Isa::avx2: {
      static const FmaProbeConfig c = probe("f32-fma-probe-avx2", Isa::avx2, kCpuAvx2Fma,
                                            f32_fma_probe__avx2, f32_fma_probe_flops__avx2);
      return if_supported(&c);
    }
#endif
#if defined(LRK_HAVE_AVX512)
    case Isa::avx512: {
      static const FmaProbeConfig c = probe("f32-fma-probe-avx512", Isa::avx512, kCpuAvx512f,
                                            f32_fma_probe__avx512, f32_fma_probe_flops__avx512);
      return if_supported(&c);
    }
#endif
    default:
      return nullptr;  // scalar: the compiler decides how it is vectorized, no meaningful peak
  }
}

}  // namespace lrk
