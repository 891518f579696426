// The f32 GEMM family: one config per ISA, chosen once from the CPU's features.
// Adding a tile or an ISA: its kernel file in cpp/kernels/f32-gemm/, its table in microkernels.h,
// and a row here.
#include "lrkernels/kernel_config.h"
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

template <std::size_t N>
void set_ukernels(F32GemmConfig& c, const F32GemmUkernelFn (&per_rows)[N]) {
  static_assert(N >= 2 && N - 1 <= kMaxMr, "a per-row table has mr + 1 slots");
  for (std::size_t r = 0; r < N; ++r) c.ukernel[r] = per_rows[r];
  c.mr = N - 1;
  c.pack = pack_f32_gemm_weights;
}

const F32GemmConfig* scalar_config() {
  static const F32GemmConfig config = [] {
    F32GemmConfig c;
    c.name = "f32-gemm-4x8-scalar";
    c.isa = Isa::scalar;
    set_ukernels(c, f32_gemm_4x8__scalar);
    c.nr = 8;
    c.kc = 512;  // a 512 x 8 panel is 16 KiB, half of the smallest L1D we target
    return c;
  }();
  return &config;
}

#if defined(LRK_HAVE_NEON)
const F32GemmConfig* neon_config() {
  static const F32GemmConfig config = [] {
    F32GemmConfig c;
    c.isa = Isa::neon;
    c.required_features = kCpuNeon;
#if defined(__aarch64__)
    c.name = "f32-gemm-8x8-aarch64-neon";
    set_ukernels(c, f32_gemm_8x8__aarch64_neon);
#else
    c.name = "f32-gemm-4x8-aarch32-neon";
    set_ukernels(c, f32_gemm_4x8__aarch32_neon);
#endif
    c.nr = 8;
    c.kc = 512;  // a 512 x 8 panel is 16 KiB, half of a 32 KiB L1D (Cortex-A53/A57/A72)
    return c;
  }();
  return &config;
}
#endif

#if defined(LRK_HAVE_AVX2)
const F32GemmConfig* avx2_config() {
  static const F32GemmConfig config = [] {
    F32GemmConfig c;
    c.name = "f32-gemm-6x16-avx2";
    c.isa = Isa::avx2;
    c.required_features = kCpuAvx2Fma;
    set_ukernels(c, f32_gemm_6x16__avx2);
    c.nr = 16;
    c.kc = 384;  // a 384 x 16 panel is 24 KiB, about half of a 32-48 KiB L1D
    return c;
  }();
  return &config;
}
#endif

#if defined(LRK_HAVE_AVX512)
const F32GemmConfig* avx512_narrow_config() {
  static const F32GemmConfig config = [] {
    F32GemmConfig c;
    c.name = "f32-gemm-12x16-avx512";
    c.isa = Isa::avx512;
    c.required_features = kCpuAvx512f;
    set_ukernels(c, f32_gemm_12x16__avx512);
    c.nr = 16;
    c.kc = 512;  // a 512 x 16 panel is 32 KiB
    return c;
  }();
  return &config;
}

const F32GemmConfig* avx512_config() {
  static const F32GemmConfig config = [] {
    F32GemmConfig c;
    c.name = "f32-gemm-8x32-avx512";
    c.isa = Isa::avx512;
    c.required_features = kCpuAvx512f;
    set_ukernels(c, f32_gemm_8x32__avx512);
    c.nr = 32;
    c.kc = 256;  // a 256 x 32 panel is 32 KiB, inside a 48 KiB L1D
    // Operands of at most 16 columns (rank-16 stages) would waste half of each 32-wide panel.
    c.narrow = avx512_narrow_config();
    return c;
  }();
  return &config;
}
#endif

const F32GemmConfig* compiled(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return scalar_config();
#if defined(LRK_HAVE_NEON)
    case Isa::neon:
      return neon_config();
#endif
#if defined(LRK_HAVE_AVX2)
    case Isa::avx2:
      return avx2_config();
#endif
#if defined(LRK_HAVE_AVX512)
    case Isa::avx512:
      return avx512_config();
#endif
    default:
      return nullptr;
  }
}

}  // namespace

const F32GemmConfig* f32_gemm_config(Isa isa) {
  const F32GemmConfig* c = compiled(isa);
  return (c != nullptr && (cpu_feature_mask() & c->required_features) == c->required_features)
             ? c
             : nullptr;
}

}  // namespace lrk
