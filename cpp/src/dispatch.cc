#include "lrkernels/dispatch.h"

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

namespace lrk {
namespace {

// LRK_HAVE_* come from CMake, one per ISA whose kernel files are part of the build.
bool compiled(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return true;
    case Isa::neon:
#if defined(LRK_HAVE_NEON)
      return true;
#else
      return false;
#endif
    case Isa::avx2:
#if defined(LRK_HAVE_AVX2)
      return true;
#else
      return false;
#endif
    case Isa::avx512:
#if defined(LRK_HAVE_AVX512)
      return true;
#else
      return false;
#endif
  }
  return false;
}

constexpr const char* kNames[kNumIsas] = {"scalar", "neon", "avx2", "avx512"};

std::atomic<int> g_active{-1};  // -1: not chosen yet
thread_local int t_last_used = -1;

}  // namespace

const char* isa_name(Isa isa) {
  const int i = static_cast<int>(isa);
  return (i >= 0 && i < kNumIsas) ? kNames[i] : "unknown";
}

bool isa_from_name(const char* name, Isa* out) {
  for (int i = 0; i < kNumIsas; ++i) {
    if (name != nullptr && std::strcmp(name, kNames[i]) == 0) {
      *out = static_cast<Isa>(i);
      return true;
    }
  }
  return false;
}

unsigned compiled_isa_mask() {
  unsigned mask = 0;
  for (int i = 0; i < kNumIsas; ++i) {
    if (compiled(static_cast<Isa>(i))) mask |= 1u << i;
  }
  return mask;
}

unsigned available_isa_mask() { return compiled_isa_mask() & cpu_isa_mask(); }

Isa best_available_isa() {
  const unsigned mask = available_isa_mask();
  for (int i = kNumIsas - 1; i > 0; --i) {
    if (mask & (1u << i)) return static_cast<Isa>(i);
  }
  return Isa::scalar;
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_acquire);
  if (v < 0) {
    int expected = -1;
    g_active.compare_exchange_strong(expected, static_cast<int>(best_available_isa()));
    v = g_active.load(std::memory_order_acquire);
  }
  return static_cast<Isa>(v);
}

void set_active_isa(Isa isa) {
  if (!(available_isa_mask() & (1u << static_cast<int>(isa)))) {
    throw std::invalid_argument(std::string("ISA '") + isa_name(isa) +
                                "' is not available: not compiled into this build or not "
                                "supported by this CPU");
  }
  g_active.store(static_cast<int>(isa), std::memory_order_release);
}

const KernelSet* kernel_set(Isa isa) {
  // Built once per ISA from the family configs; a set exists only when every family it needs does.
  static const auto sets = [] {
    struct Sets {
      KernelSet set[kNumIsas];
      bool ok[kNumIsas];
    } s{};
    for (int i = 0; i < kNumIsas; ++i) {
      const Isa isa = static_cast<Isa>(i);
      KernelSet& k = s.set[i];
      k.isa = isa;
      k.f32_gemm = f32_gemm_config(isa);
      k.f32_transpose = f32_transpose_config(isa);
      k.f32_dwconv = f32_dwconv_config(isa);
      k.f32_winograd = f32_winograd_config(isa);
      k.f32_clamp = f32_clamp_config(isa);
      k.f32_rnn = f32_rnn_config(isa);
      k.fma_probe = fma_probe_config(isa);
      s.ok[i] = compiled(isa) && (cpu_isa_mask() & (1u << i)) && k.f32_gemm && k.f32_transpose &&
                k.f32_dwconv && k.f32_winograd && k.f32_clamp && k.f32_rnn;
    }
    return s;
  }();
  const int i = static_cast<int>(isa);
  return (i >= 0 && i < kNumIsas && sets.ok[i]) ? &sets.set[i] : nullptr;
}

const KernelSet& kernel_set_for(Isa isa) {
  const KernelSet* k = kernel_set(isa);
  if (k == nullptr) {
    throw std::invalid_argument(std::string("ISA '") + isa_name(isa) + "' is not available");
  }
  return *k;
}

const KernelSet& active_kernel_set() { return *kernel_set(active_isa()); }

int last_used_isa() { return t_last_used; }
void record_used_isa(Isa isa) { t_last_used = static_cast<int>(isa); }

}  // namespace lrk
