#include "lrkernels/gemm.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <utility>

#include "lrkernels/threadpool.h"

namespace lrk {
namespace {

// Budgets in bytes. Deliberately below the smallest targets (Pi 4: 32 KiB L1D, 1 MiB shared L2;
// x86 parts have more) so the same schedule works everywhere without cache probing.
constexpr std::size_t kL2WeightBlockBytes = 512 * 1024;   // kc x nc packed weights
constexpr std::size_t kL2InputBlockBytes = 256 * 1024;    // mc x kc input rows
constexpr std::size_t kL2IntermediateBytes = 256 * 1024;  // mb x rank low-rank intermediate

std::atomic<std::size_t> g_override_kc{0}, g_override_nc{0}, g_override_mc{0}, g_override_mb{0};
std::atomic<std::size_t> g_scratch_allocations{0};

std::size_t round_down_to(std::size_t value, std::size_t multiple) {
  return std::max(multiple, value / multiple * multiple);
}

// Intermediate rows are padded to a cache line so every row of the scratch tile starts aligned.
std::size_t padded_rank(std::size_t rank) { return (rank + 15) / 16 * 16; }

}  // namespace

Blocking resolve_blocking(const F32GemmConfig& ks, std::size_t rank_hint) {
  Blocking b;
  b.kc = ks.kc;
  b.nc = round_down_to(kL2WeightBlockBytes / (b.kc * sizeof(float)), ks.nr);
  b.mc = round_down_to(kL2InputBlockBytes / (b.kc * sizeof(float)), ks.mr);
  b.mb = round_down_to(
      kL2IntermediateBytes / (padded_rank(std::max<std::size_t>(rank_hint, 1)) * sizeof(float)),
      ks.mr);
  if (std::size_t v = g_override_kc.load(std::memory_order_relaxed)) b.kc = v;
  if (std::size_t v = g_override_nc.load(std::memory_order_relaxed)) b.nc = round_down_to(v, ks.nr);
  if (std::size_t v = g_override_mc.load(std::memory_order_relaxed)) b.mc = round_down_to(v, ks.mr);
  if (std::size_t v = g_override_mb.load(std::memory_order_relaxed)) b.mb = round_down_to(v, ks.mr);
  return b;
}

const F32GemmConfig& config_for_width(const F32GemmConfig& ks, std::size_t n) {
  return (ks.narrow != nullptr && n <= ks.narrow->nr) ? *ks.narrow : ks;
}

void set_blocking_override(const Blocking& b) {
  g_override_kc.store(b.kc);
  g_override_nc.store(b.nc);
  g_override_mc.store(b.mc);
  g_override_mb.store(b.mb);
}

namespace {

// Rows [m_begin, m_end) x panels [p_begin, p_end) of C, Goto-style: the kc x nr panel stays in L1
// while the row tiles of an M block pass over it. Every output element sees the same sequence of
// micro-kernel calls whichever tile range it falls in, so splitting over ranges changes no bit.
// A tile is clamped right after its last K block is stored.
void gemm_tiles(const F32GemmConfig& ks, const Blocking& blk, std::size_t m_begin,
                std::size_t m_end, std::size_t p_begin, std::size_t p_end, const float* a,
                std::size_t lda, const PackedWeights& w, float* c, std::size_t ldc,
                const OutputClamp& clamp) {
  const std::size_t n = w.n(), k = w.k(), nr = ks.nr, mr = ks.mr;
  const std::size_t panels_per_nc = std::max<std::size_t>(1, blk.nc / nr);
  for (std::size_t pc0 = p_begin; pc0 < p_end; pc0 += panels_per_nc) {
    const std::size_t pc_end = std::min(p_end, pc0 + panels_per_nc);
    for (std::size_t kc0 = 0; kc0 < k; kc0 += blk.kc) {
      const std::size_t kc = std::min(blk.kc, k - kc0);
      const bool last_k_block = kc0 + kc == k;
      for (std::size_t mc0 = m_begin; mc0 < m_end; mc0 += blk.mc) {
        const std::size_t mc_end = std::min(m_end, mc0 + blk.mc);
        for (std::size_t p = pc0; p < pc_end; ++p) {
          const std::size_t col0 = p * nr;
          const std::size_t cols = std::min(nr, n - col0);
          const void* panel = w.panel_weights(p, kc0);
          const float* init = kc0 == 0 ? w.panel_bias(p) : nullptr;  // later K blocks accumulate
          for (std::size_t m0 = mc0; m0 < mc_end; m0 += mr) {
            const std::size_t rows = std::min(mr, mc_end - m0);
            const float* a_tile = a + m0 * lda + kc0;
            float* c_tile = c + m0 * ldc + col0;
            ks.ukernel[rows](cols, kc, 1, &a_tile, lda, panel, init, c_tile, ldc);
            if (clamp && last_k_block) clamp.apply(rows, cols, c_tile, ldc);
          }
        }
      }
    }
  }
}

// [begin, end) of part `i` of `parts` near-equal parts of `count` items.
std::pair<std::size_t, std::size_t> split_range(std::size_t count, std::size_t parts,
                                                std::size_t i) {
  return {count * i / parts, count * (i + 1) / parts};
}

}  // namespace

namespace {
thread_local std::size_t t_thread_cap = SIZE_MAX;
}  // namespace

ScopedThreadCap::ScopedThreadCap(std::size_t cap) : saved_(t_thread_cap) {
  t_thread_cap = std::max<std::size_t>(1, std::min(cap, saved_));
}
ScopedThreadCap::~ScopedThreadCap() { t_thread_cap = saved_; }

std::size_t threads_for_flops(double flops) {
  // Below ~0.5 MFLOP a thread's share would take less than the few microseconds a hand-off costs.
  const double per_thread = 5e5;
  const std::size_t useful = static_cast<std::size_t>(std::max(1.0, flops / per_thread));
  return std::min({num_threads(), useful, t_thread_cap});
}

void gemm(std::size_t m, const float* a, std::size_t lda, const PackedWeights& w, float* c,
          std::size_t ldc, const OutputClamp& clamp) {
  if (m == 0) return;
  const F32GemmConfig& ks = w.config();
  if (a == nullptr || c == nullptr) throw std::invalid_argument("gemm: null input or output");
  const std::size_t n = w.n(), k = w.k(), nr = ks.nr, mr = ks.mr, panels = w.num_panels();
  const std::size_t threads = threads_for_flops(2.0 * m * n * k);

  if (m <= mr) {
    // One row tile (batch 1 is the GEMV case): no weight reuse to gain from blocking, so every
    // packed panel is streamed exactly once over the full K and C is written once. Threads split
    // panels.
    const F32GemmUkernelFn kernel = ks.ukernel[m];
    const std::size_t parts = std::min(threads, panels);
    parallel_for(parts, parts, [&](std::size_t part) {
      const auto range = split_range(panels, parts, part);
      for (std::size_t p = range.first; p < range.second; ++p) {
        const std::size_t col0 = p * nr, cols = std::min(nr, n - col0);
        kernel(cols, k, 1, &a, lda, w.panel_weights(p), w.panel_bias(p), c + col0, ldc);
        clamp.apply(m, cols, c + col0, ldc);
      }
    });
    return;
  }

  const Blocking blk = resolve_blocking(ks, 0);
  // Threads split the output into row-tile ranges x panel ranges; K is never split.
  const std::size_t row_tiles = (m + mr - 1) / mr;
  const std::size_t col_parts = std::min(panels, threads);
  const std::size_t row_parts = std::min(row_tiles, (threads + col_parts - 1) / col_parts);
  parallel_for(row_parts * col_parts, threads, [&](std::size_t task) {
    const auto rows = split_range(row_tiles, row_parts, task / col_parts);
    const auto cols = split_range(panels, col_parts, task % col_parts);
    gemm_tiles(ks, blk, rows.first * mr, std::min(m, rows.second * mr), cols.first, cols.second, a,
               lda, w, c, ldc, clamp);
  });
}

void lowrank_gemm(std::size_t m, const float* x, std::size_t ldx, const PackedWeights& v,
                  const PackedWeights& u, float* y, std::size_t ldy, const OutputClamp& clamp) {
  const std::size_t rank = v.n();
  if (u.k() != rank) throw std::logic_error("lowrank_gemm: rank of U and V differ");
  if (m == 0) return;
  const Blocking blk = resolve_blocking(v.config(), rank);
  const std::size_t ldt = padded_rank(rank);
  const std::size_t mb = std::min(m, blk.mb);
  float* t = thread_scratch<float>(mb * ldt);
  for (std::size_t m0 = 0; m0 < m; m0 += mb) {
    const std::size_t rows = std::min(mb, m - m0);
    gemm(rows, x + m0 * ldx, ldx, v, t, ldt);         // t = x V^T   (rank-sized, in L2)
    gemm(rows, t, ldt, u, y + m0 * ldy, ldy, clamp);  // y = clamp(t U^T + b), while t is hot
  }
}

namespace {
thread_local AlignedBuffer t_scratch;
thread_local AlignedBuffer t_workspace;
}  // namespace

void* thread_workspace_bytes(std::size_t bytes) {
  if (t_workspace.size_bytes() < bytes) {
    t_workspace.resize_bytes(bytes);
    g_scratch_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  return t_workspace.data();
}

void* thread_scratch_bytes(std::size_t bytes) {
  if (t_scratch.size_bytes() < bytes) {
    t_scratch.resize_bytes(bytes);
    g_scratch_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  return t_scratch.data();
}

void trim_thread_scratch(std::size_t keep_bytes) {
  if (t_scratch.size_bytes() > keep_bytes) t_scratch.resize_bytes(0);
  if (t_workspace.size_bytes() > keep_bytes) t_workspace.resize_bytes(0);
}

std::size_t thread_scratch_held() { return t_scratch.size_bytes() + t_workspace.size_bytes(); }

std::size_t scratch_allocation_count() { return g_scratch_allocations.load(); }

}  // namespace lrk
