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
}

const CandidateTable<F32GemmConfig>& table() {
  static const auto& t = build_candidate_table<F32GemmConfig>(fill);
  return t;
}

}  // namespace

const F32GemmConfig* f16w_gemm_config(Isa isa) { return table().best(isa); }
std::vector<const F32GemmConfig*> f16w_gemm_configs(Isa isa) { return table().all(isa); }

}  // namespace lrk
