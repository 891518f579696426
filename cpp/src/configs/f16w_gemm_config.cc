// The f16w GEMM family: f32 activations and arithmetic on fp16-stored weights (half the bytes of
// the f32 family; the same micro-kernel contract and driver). Rows in order of preference per ISA.
// Adding a row: its kernel file in cpp/kernels/f16w-gemm/, its table in microkernels.h, a row here.
#include "config_table.h"
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

template <std::size_t N>
void set_kernels(F32GemmConfig& c, const char* name, unsigned features,
                 const F32GemmUkernelFn (&per_rows)[N], std::size_t nr, std::size_t kc) {
  static_assert(N >= 2 && N - 1 <= kMaxMr, "a per-row table has mr + 1 slots");
  c.name = name;
  c.required_features = features;
  c.weight_type = DType::f16;
  c.weight_bytes = 2;
  for (std::size_t r = 0; r < N; ++r) c.ukernel[r] = per_rows[r];
  c.mr = N - 1;
  c.nr = nr;
  c.kc = kc;
  c.pack = pack_f16_gemm_weights;
}

void fill(CandidateTable<F32GemmConfig>& t) {
  // Software conversion per weight: correct everywhere, fast nowhere (no SIMD ISA is built).
  set_kernels(t.add(Isa::scalar), "f16w-gemm-4x8-scalar", 0, f16w_gemm_4x8__scalar, 8, 512);
  // The SIMD rows' kc doubles the f32 family's: the fp16 panel keeps the f32 panel's bytes in L1.
#if defined(LRK_HAVE_AVX2)
  // A 768 x 16 fp16 panel is 24 KiB, as the f32 6x16 row's.
  set_kernels(t.add(Isa::avx2), "f16w-gemm-6x16-avx2", kCpuAvx2Fma | kCpuF16c, f16w_gemm_6x16__avx2,
              16, 768);
#endif
#if defined(LRK_HAVE_AVX512)
  {
    // Operands of at most 16 columns (rank-16 stages) would waste half of each 32-wide panel. The
    // table has no variant storage: the narrow config lives here (built once, never copied).
    static F32GemmConfig narrow;
    narrow.isa = Isa::avx512;
    set_kernels(narrow, "f16w-gemm-12x16-avx512", kCpuAvx512f | kCpuF16c, f16w_gemm_12x16__avx512,
                16, 1024);  // a 1024 x 16 fp16 panel is 32 KiB
    F32GemmConfig& c = t.add(Isa::avx512);
    set_kernels(c, "f16w-gemm-8x32-avx512", kCpuAvx512f | kCpuF16c, f16w_gemm_8x32__avx512, 32,
                512);  // a 512 x 32 fp16 panel is 32 KiB
    c.narrow = &narrow;
  }
#endif
#if defined(LRK_HAVE_NEON)
  // fp16 -> f32 widening in the weight load (FCVTL; VCVT.F32.F16 on armv7), f32 FMA. A 512 x 8
  // fp16 panel is 8 KiB: K blocks as long as the f32 kernel's, in a quarter of a 32 KiB L1D.
#if defined(__aarch64__)
#if defined(LRK_HAVE_NEONFP16ARITH)
  // ARMv8.2 fp16 arithmetic (A76/A78: asimdhp): FMLA .8h, twice the f32 kernel's MACs per
  // instruction; fp16 accumulation in blocks of 32 k added into f32 (error bound in the kernel
  // file). A 512 x 16 fp16 panel is 16 KiB.
  set_kernels(t.add(Isa::neon), "f16-gemm-4x16-neonfp16arith", kCpuNeon | kCpuNeonFp16Arith,
              f16_gemm_4x16__neonfp16arith, 16, 512);
#endif
  set_kernels(t.add(Isa::neon), "f16w-gemm-8x8-aarch64-neon", kCpuNeon, f16w_gemm_8x8__aarch64_neon,
              8, 512);
#else
  set_kernels(t.add(Isa::neon), "f16w-gemm-4x8-aarch32-neon", kCpuNeon, f16w_gemm_4x8__aarch32_neon,
              8, 512);
#endif
#endif
}

const CandidateTable<F32GemmConfig>& table() {
  static const auto& t = build_candidate_table<F32GemmConfig>(fill);
  return t;
}

}  // namespace

const F32GemmConfig* f16w_gemm_config(Isa isa) { return table().best(isa); }
std::vector<const F32GemmConfig*> f16w_gemm_configs(Isa isa) { return table().all(isa); }

}  // namespace lrk
