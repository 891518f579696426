// A persistent pool of worker threads for splitting one layer call over output tiles.
//
// Workers start lazily, spin briefly after a job (a layer's next call usually follows at once),
// then sleep. Work is always split over independent output tiles, never over a reduction, so
// results are bitwise identical for any thread count. One job runs at a time; a call that finds the
// pool busy (another Python thread, or a nested call from a worker) runs its tasks inline on its
// own thread.
#pragma once

#include <cstddef>

namespace lrk {

// Threads a layer call may use (>= 1). Default: the CPUs this process may run on.
std::size_t num_threads();
// std::invalid_argument unless 1 <= n <= max_num_threads(): more threads than that only
// oversubscribe the cores (each worker spins, then sleeps) and cost memory per thread.
void set_num_threads(std::size_t n);
std::size_t max_num_threads();  // 4 per CPU, at least 16
std::size_t default_num_threads();

namespace detail {
void parallel_run(std::size_t tasks, void (*fn)(void*, std::size_t), void* ctx,
                  std::size_t max_threads);
}

// Runs f(task) for every task in [0, tasks), on up to min(num_threads(), max_threads) threads
// including the caller; returns when all are done. No heap allocation per call.
template <class F>
void parallel_for(std::size_t tasks, std::size_t max_threads, F&& f) {
  if (tasks == 0) return;
  auto trampoline = [](void* ctx, std::size_t task) { (*static_cast<F*>(ctx))(task); };
  detail::parallel_run(tasks, trampoline, const_cast<void*>(static_cast<const void*>(&f)),
                       max_threads);
}

}  // namespace lrk
