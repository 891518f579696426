// The f32 GEMM family: one row per ISA, chosen once from the CPU's features.
// Adding a tile or an ISA: its kernel file in cpp/kernels/f32-gemm/, its table in microkernels.h,
// and a row here.
#include "config_table.h"
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

// Name, required features, the per-row kernels (mr follows from the table) and the f32 packer.
template <std::size_t N>
void set_kernels(F32GemmConfig& c, const char* name, unsigned features,
                 const F32GemmUkernelFn (&per_rows)[N]) {
  static_assert(N >= 2 && N - 1 <= kMaxMr, "a per-row table has mr + 1 slots");
  c.name = name;
  c.required_features = features;
  for (std::size_t r = 0; r < N; ++r) c.ukernel[r] = per_rows[r];
  c.mr = N - 1;
  c.pack = pack_f32_gemm_weights;
}

void fill(ConfigTable<F32GemmConfig>& t) {
  {
    F32GemmConfig& c = t.add(Isa::scalar);
    set_kernels(c, "f32-gemm-4x8-scalar", 0, f32_gemm_4x8__scalar);
    c.nr = 8;
    c.kc = 512;  // a 512 x 8 panel is 16 KiB, half of the smallest L1D we target
  }
#if defined(LRK_HAVE_NEON)
  {
    F32GemmConfig& c = t.add(Isa::neon);
#if defined(__aarch64__)
    set_kernels(c, "f32-gemm-8x8-aarch64-neon", kCpuNeon, f32_gemm_8x8__aarch64_neon);
#else
    set_kernels(c, "f32-gemm-4x8-aarch32-neon", kCpuNeon, f32_gemm_4x8__aarch32_neon);
#endif
    c.nr = 8;
    c.kc = 512;  // a 512 x 8 panel is 16 KiB, half of a 32 KiB L1D (Cortex-A53/A57/A72)
  }
#endif
#if defined(LRK_HAVE_AVX2)
  {
    F32GemmConfig& c = t.add(Isa::avx2);
    set_kernels(c, "f32-gemm-6x16-avx2", kCpuAvx2Fma, f32_gemm_6x16__avx2);
    c.nr = 16;
    c.kc = 384;  // a 384 x 16 panel is 24 KiB, about half of a 32-48 KiB L1D
  }
#endif
#if defined(LRK_HAVE_AVX512)
  {
    // Operands of at most 16 columns (rank-16 stages) would waste half of each 32-wide panel.
    F32GemmConfig& narrow = t.variant(Isa::avx512);
    set_kernels(narrow, "f32-gemm-12x16-avx512", kCpuAvx512f, f32_gemm_12x16__avx512);
    narrow.nr = 16;
    narrow.kc = 512;  // a 512 x 16 panel is 32 KiB

    F32GemmConfig& c = t.add(Isa::avx512);
    set_kernels(c, "f32-gemm-8x32-avx512", kCpuAvx512f, f32_gemm_8x32__avx512);
    c.nr = 32;
    c.kc = 256;  // a 256 x 32 panel is 32 KiB, inside a 48 KiB L1D
    c.narrow = &narrow;
  }
#endif
}

}  // namespace

const F32GemmConfig* f32_gemm_config(Isa isa) {
  static const ConfigTable<F32GemmConfig>& table = build_table<F32GemmConfig>(fill);
  return table.get(isa);
}

}  // namespace lrk
