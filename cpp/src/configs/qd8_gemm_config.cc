// The qd8-f32-qc8w GEMM family (int8): rows in order of preference per ISA, told apart by
// sub-ISA features (VNNI, AVX-VNNI, ARM dotprod). The driver is cpp/src/quantized_gemm.cc.
// Adding a row: its kernel file in cpp/kernels/qd8-f32-qc8w-gemm/, its table in microkernels.h, a
// row here.
#include "config_table.h"
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {

// The element-wise steps of an ISA (cpp/kernels/qd8-convert/convert-<isa>.cc).
struct Convert {
  QD8RangeFn range;
  QD8QuantizeFn quantize;
  QD8DequantizeFn dequantize;
};
#define LRK_CONVERT(isa) \
  Convert { qd8_convert_range__##isa, qd8_convert_quantize__##isa, qd8_convert_dequantize__##isa }

template <std::size_t N>
void set_kernels(QD8GemmConfig& c, const char* name, unsigned features,
                 const QD8GemmUkernelFn (&per_rows)[N], std::size_t nr, int input_offset,
                 const Convert& convert) {
  static_assert(N >= 2 && N - 1 <= kMaxMr, "a per-row table has mr + 1 slots");
  c.name = name;
  c.required_features = features;
  for (std::size_t r = 0; r < N; ++r) c.ukernel[r] = per_rows[r];
  c.mr = N - 1;
  c.nr = nr;
  c.input_offset = input_offset;
  c.range = convert.range;
  c.quantize = convert.quantize;
  c.dequantize = convert.dequantize;
}

void fill(CandidateTable<QD8GemmConfig>& t) {
  set_kernels(t.add(Isa::scalar), "qd8-f32-qc8w-gemm-4x4c4-scalar", 0,
              qd8_f32_qc8w_gemm_4x4c4__scalar, 4, 0, LRK_CONVERT(scalar));
#if defined(LRK_HAVE_AVX512VNNI)
  set_kernels(t.add(Isa::avx512), "qd8-f32-qc8w-gemm-8x32c4-avx512vnni",
              kCpuAvx512f | kCpuAvx512Vnni, qd8_f32_qc8w_gemm_8x32c4__avx512vnni, 32, 128,
              LRK_CONVERT(avx512));
#endif
#if defined(LRK_HAVE_AVXVNNI)
  set_kernels(t.add(Isa::avx512), "qd8-f32-qc8w-gemm-8x8c4-avxvnni", kCpuAvx2Fma | kCpuAvxVnni,
              qd8_f32_qc8w_gemm_8x8c4__avxvnni, 8, 128, LRK_CONVERT(avx512));
  set_kernels(t.add(Isa::avx2), "qd8-f32-qc8w-gemm-8x8c4-avxvnni", kCpuAvx2Fma | kCpuAvxVnni,
              qd8_f32_qc8w_gemm_8x8c4__avxvnni, 8, 128, LRK_CONVERT(avx2));
#endif
#if defined(LRK_HAVE_AVX2)
  set_kernels(t.add(Isa::avx512), "qd8-f32-qc8w-gemm-4x8c4-avx2", kCpuAvx2Fma,
              qd8_f32_qc8w_gemm_4x8c4__avx2, 8, 0, LRK_CONVERT(avx512));
  set_kernels(t.add(Isa::avx2), "qd8-f32-qc8w-gemm-4x8c4-avx2", kCpuAvx2Fma,
              qd8_f32_qc8w_gemm_4x8c4__avx2, 8, 0, LRK_CONVERT(avx2));
#endif
#if defined(LRK_HAVE_NEONDOT) && defined(__aarch64__)
  // ARMv8.2 SDOT (Cortex-A76/A78, Pi 5, Orin): 16 MACs per instruction.
  set_kernels(t.add(Isa::neon), "qd8-f32-qc8w-gemm-8x8c4-neondot", kCpuNeon | kCpuNeonDot,
              qd8_f32_qc8w_gemm_8x8c4__neondot, 8, 0, LRK_CONVERT(neon));
#endif
#if defined(LRK_HAVE_NEON)
  // Without dot products (Cortex-A53/A57/A72, armv7): SMULL/SMLAL pairs widened by SADALP.
#if defined(__aarch64__)
  set_kernels(t.add(Isa::neon), "qd8-f32-qc8w-gemm-4x8c4-aarch64-neon", kCpuNeon,
              qd8_f32_qc8w_gemm_4x8c4__aarch64_neon, 8, 0, LRK_CONVERT(neon));
#else
  set_kernels(t.add(Isa::neon), "qd8-f32-qc8w-gemm-2x8c4-aarch32-neon", kCpuNeon,
              qd8_f32_qc8w_gemm_2x8c4__aarch32_neon, 8, 0, LRK_CONVERT(neon));
#endif
#endif
}

const CandidateTable<QD8GemmConfig>& table() {
  static const auto& t = build_candidate_table<QD8GemmConfig>(fill);
  return t;
}

}  // namespace

const QD8GemmConfig* qd8_gemm_config(Isa isa) { return table().best(isa); }
std::vector<const QD8GemmConfig*> qd8_gemm_configs(Isa isa) { return table().all(isa); }

}  // namespace lrk
