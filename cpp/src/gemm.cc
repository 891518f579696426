#include "lrkernels/gemm.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>


namespace lrk {
namespace {

// Budgets in bytes. Deliberately below the smallest targets (Pi 4: 32 KiB L1D, 1 MiB shared L2;
// x86 parts have more) so the same schedule works everywhere without cache probing.
constexpr std::size_t kL2WeightBlockBytes = 512 * 1024;  // kc x nc packed weights
constexpr std::size_t kL2InputBlockBytes = 256 * 1024;   // mc x kc input rows
constexpr std::size_t kL2IntermediateBytes = 256 * 1024;  // mb x rank low-rank intermediate

std::atomic<std::size_t> g_override_kc{0}, g_override_nc{0}, g_override_mc{0}, g_override_mb{0};
std::atomic<std::size_t> g_scratch_allocations{0};

std::size_t round_down_to(std::size_t value, std::size_t multiple) {
  return std::max(multiple, value / multiple * multiple);
}

// Intermediate rows are padded to a cache line so every row of the scratch tile starts aligned.
std::size_t padded_rank(std::size_t rank) { return (rank + 15) / 16 * 16; }

}  // namespace

Blocking resolve_blocking(const GemmKernels& ks, std::size_t rank_hint) {
  Blocking b;
  b.kc = ks.kc;
  b.nc = round_down_to(kL2WeightBlockBytes / (b.kc * sizeof(float)), ks.nr);
  b.mc = round_down_to(kL2InputBlockBytes / (b.kc * sizeof(float)), ks.mr);
  b.mb = round_down_to(kL2IntermediateBytes / (padded_rank(std::max<std::size_t>(rank_hint, 1)) *
                                               sizeof(float)),
                       ks.mr);
  if (std::size_t v = g_override_kc.load(std::memory_order_relaxed)) b.kc = v;
  if (std::size_t v = g_override_nc.load(std::memory_order_relaxed)) b.nc = round_down_to(v, ks.nr);
  if (std::size_t v = g_override_mc.load(std::memory_order_relaxed)) b.mc = round_down_to(v, ks.mr);
  if (std::size_t v = g_override_mb.load(std::memory_order_relaxed)) b.mb = round_down_to(v, ks.mr);
  return b;
}

const GemmKernels& kernels_for_width(const GemmKernels& ks, std::size_t n) {
  return (ks.narrow != nullptr && n <= ks.narrow->nr) ? *ks.narrow : ks;
}

void set_blocking_override(const Blocking& b) {
  g_override_kc.store(b.kc);
  g_override_nc.store(b.nc);
  g_override_mc.store(b.mc);
  g_override_mb.store(b.mb);
}

void gemm(std::size_t m, const float* a, std::size_t lda, const PackedWeights& w, float* c,
          std::size_t ldc) {
  if (m == 0) return;
  const GemmKernels& ks = w.kernels();
  if (a == nullptr || c == nullptr) throw std::invalid_argument("gemm: null input or output");
  const std::size_t n = w.n(), k = w.k(), nr = ks.nr, mr = ks.mr;

  if (m <= mr) {
    // One row tile (batch 1 is the GEMV case): no weight reuse to gain from blocking, so every packed
    // panel is streamed exactly once over the full K and C is written once.
    const GemmUkernelFn kernel = ks.ukernel[m];
    for (std::size_t p = 0; p < w.num_panels(); ++p) {
      const std::size_t col0 = p * nr;
      kernel(std::min(nr, n - col0), k, 1, &a, lda, w.panel_weights(p), w.panel_bias(p), c + col0,
             ldc);
    }
    return;
  }

  const Blocking blk = resolve_blocking(ks, 0);
  // Goto-style loop nest. Output tiles (nc block x mc block) are independent, which is where a
  // thread pool will later split the work; K is never split across threads.
  for (std::size_t nc0 = 0; nc0 < n; nc0 += blk.nc) {
    const std::size_t nc_end = std::min(n, nc0 + blk.nc);
    for (std::size_t kc0 = 0; kc0 < k; kc0 += blk.kc) {
      const std::size_t kc = std::min(blk.kc, k - kc0);
      for (std::size_t mc0 = 0; mc0 < m; mc0 += blk.mc) {
        const std::size_t mc_end = std::min(m, mc0 + blk.mc);
        for (std::size_t col0 = nc0; col0 < nc_end; col0 += nr) {
          const std::size_t p = col0 / nr;
          const std::size_t cols = std::min(nr, n - col0);
          const float* panel = w.panel_weights(p) + kc0 * nr;
          const float* init = kc0 == 0 ? w.panel_bias(p) : nullptr;  // later K blocks accumulate
          // The kc x nr panel stays in L1 while the row tiles of this M block pass over it.
          for (std::size_t m0 = mc0; m0 < mc_end; m0 += mr) {
            const std::size_t rows = std::min(mr, mc_end - m0);
            const float* a_tile = a + m0 * lda + kc0;
            ks.ukernel[rows](cols, kc, 1, &a_tile, lda, panel, init, c + m0 * ldc + col0, ldc);
          }
        }
      }
    }
  }
}

void lowrank_gemm(std::size_t m, const float* x, std::size_t ldx, const PackedWeights& v,
                  const PackedWeights& u, float* y, std::size_t ldy) {
  const std::size_t rank = v.n();
  if (u.k() != rank) throw std::logic_error("lowrank_gemm: rank of U and V differ");
  if (m == 0) return;
  const Blocking blk = resolve_blocking(v.kernels(), rank);
  const std::size_t ldt = padded_rank(rank);
  const std::size_t mb = std::min(m, blk.mb);
  float* t = thread_scratch(mb * ldt);
  for (std::size_t m0 = 0; m0 < m; m0 += mb) {
    const std::size_t rows = std::min(mb, m - m0);
    gemm(rows, x + m0 * ldx, ldx, v, t, ldt);       // t = x V^T   (rank-sized, in L2)
    gemm(rows, t, ldt, u, y + m0 * ldy, ldy);       // y = t U^T + b, while t is hot
  }
}

float* thread_scratch(std::size_t count) {
  thread_local AlignedBuffer buffer;
  if (buffer.size() < count) {
    buffer.resize(count);
    g_scratch_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  return buffer.data();
}

std::size_t scratch_allocation_count() { return g_scratch_allocations.load(); }

}  // namespace lrk
