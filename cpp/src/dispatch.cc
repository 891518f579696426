#include "lrkernels/dispatch.h"

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

namespace lrk {
namespace {

// The kernel table for each ISA, or nullptr when this build did not compile it (LRK_HAVE_* come
// from CMake, one per per-ISA translation unit that is part of the build).
const GemmKernels* compiled_kernels(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return gemm_kernels_scalar();
    case Isa::neon:
#if defined(LRK_HAVE_NEON)
      return gemm_kernels_neon();
#else
      return nullptr;
#endif
    case Isa::avx2:
#if defined(LRK_HAVE_AVX2)
      return gemm_kernels_avx2();
#else
      return nullptr;
#endif
    case Isa::avx512:
#if defined(LRK_HAVE_AVX512)
      return gemm_kernels_avx512();
#else
      return nullptr;
#endif
  }
  return nullptr;
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
    if (compiled_kernels(static_cast<Isa>(i)) != nullptr) mask |= 1u << i;
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

const GemmKernels& gemm_kernels_for(Isa isa) {
  if (!(available_isa_mask() & (1u << static_cast<int>(isa)))) {
    throw std::invalid_argument(std::string("ISA '") + isa_name(isa) + "' is not available");
  }
  return *compiled_kernels(isa);
}

const GemmKernels& active_gemm_kernels() { return *compiled_kernels(active_isa()); }

int last_used_isa() { return t_last_used; }
void record_used_isa(Isa isa) { t_last_used = static_cast<int>(isa); }

}  // namespace lrk
