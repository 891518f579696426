#include "lrkernels/threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "lrkernels/fp_mode.h"
#include "lrkernels/gemm.h"  // trim_thread_scratch

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace lrk {
namespace {

std::size_t detect_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<std::size_t>(n);
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? n : 1;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield");
#endif
}

thread_local bool t_in_pool_job = false;  // nested parallel_for from a task runs inline

// One parallel_for call. Lives on the caller's stack; workers claim it under the pool's mutex and
// drop their reference as the last thing they do with it, and the caller waits for that.
struct Job {
  void (*fn)(void*, std::size_t);
  void* ctx;
  std::size_t tasks;
  std::size_t max_workers;
  std::size_t claimed = 0;  // guarded by the pool's mutex
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> done{0};
  std::atomic<std::size_t> refs{0};
  // The first exception a task threw (e.g. std::bad_alloc growing a worker's scratch): rethrown on
  // the calling thread, since an exception leaving a worker thread would terminate the process.
  std::mutex error_mutex;
  std::exception_ptr error;
};

void work_on(Job& job) {
  const ScopedFlushDenormals ftz;  // the same FP mode on every thread: identical results
  const bool outer = t_in_pool_job;
  t_in_pool_job = true;
  for (;;) {
    const std::size_t t = job.next.fetch_add(1, std::memory_order_relaxed);
    if (t >= job.tasks) break;
    try {
      job.fn(job.ctx, t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(job.error_mutex);
      if (!job.error) job.error = std::current_exception();
    }
    job.done.fetch_add(1, std::memory_order_release);
  }
  t_in_pool_job = outer;
}

class Pool {
 public:
  static Pool& get() {
    // Never destroyed: detached workers outlive static destructors.
    static Pool* first = [] {
      current_pool() = new Pool();
#if defined(__linux__)
      // A forked child (multiprocessing) has none of the parent's workers, and a mutex a worker
      // held at the fork stays locked there: the child starts a fresh pool (the old one leaks).
      pthread_atfork(nullptr, nullptr, [] {
        const std::size_t threads = current_pool()->threads();
        current_pool() = new Pool();
        current_pool()->set_threads(threads);
      });
#endif
      return current_pool();
    }();
    (void)first;
    return *current_pool();
  }

  std::size_t threads() const { return threads_.load(std::memory_order_relaxed); }
  void set_threads(std::size_t n) { threads_.store(std::max<std::size_t>(1, n)); }

  void run(std::size_t tasks, void (*fn)(void*, std::size_t), void* ctx, std::size_t max_threads) {
    const std::size_t want = std::min({threads(), max_threads, tasks});
    if (want <= 1 || t_in_pool_job) return run_inline(tasks, fn, ctx);
    std::unique_lock<std::mutex> busy(job_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) return run_inline(tasks, fn, ctx);  // another caller holds the pool
    Job job;
    job.fn = fn;
    job.ctx = ctx;
    job.tasks = tasks;
    job.max_workers = want - 1;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ensure_workers(want - 1);
      current_ = &job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work_on(job);  // the caller takes tasks too
    // The tasks other threads took are short: spin, then yield.
    for (int spin = 0; job.done.load(std::memory_order_acquire) < tasks; ++spin) {
      if (spin < 20000) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      current_ = nullptr;  // late workers find nothing to claim
    }
    while (job.refs.load(std::memory_order_acquire) != 0) cpu_relax();
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  Pool() : threads_(detect_cpus()) {}

  // Inline tasks hold no pool lock, so calls nested in them may still use the pool (a
  // one-task call, e.g. a 7x7 map that is a single band, parallelizes its inner stages).
  static Pool*& current_pool() {
    static Pool* pool = nullptr;
    return pool;
  }

  static void run_inline(std::size_t tasks, void (*fn)(void*, std::size_t), void* ctx) {
    for (std::size_t t = 0; t < tasks; ++t) fn(ctx, t);
  }

  void ensure_workers(std::size_t n) {  // called with mutex_ held
    while (workers_ < n) {
      std::thread([this] { worker_loop(); }).detach();
      ++workers_;
    }
  }

  void worker_loop() {
    std::uint64_t seen = generation_.load(std::memory_order_acquire);
    for (;;) {
      // A layer's next call usually follows at once: spin a little before sleeping.
      for (int spin = 0; spin < 4000 && generation_.load(std::memory_order_acquire) == seen;
           ++spin) {
        cpu_relax();
      }
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        seen = generation_.load(std::memory_order_relaxed);
        if (current_ != nullptr && current_->claimed < current_->max_workers) {
          job = current_;
          ++job->claimed;
          job->refs.fetch_add(1, std::memory_order_relaxed);
        }
      }
      if (job != nullptr) {
        work_on(*job);
        job->refs.fetch_sub(1, std::memory_order_release);  // last touch of the job
        // A worker's scratch is its own and idle now; the caller's scratch may still be in use by
        // the stage that called parallel_for (Layer::run trims it when the call ends).
        trim_thread_scratch();
      }
    }
  }

  std::atomic<std::size_t> threads_;
  std::mutex job_mutex_;  // one job at a time
  std::mutex mutex_;      // guards current_, workers_ and the claim counts
  std::condition_variable wake_;
  std::atomic<std::uint64_t> generation_{0};
  std::size_t workers_ = 0;
  Job* current_ = nullptr;
};

}  // namespace

std::size_t num_threads() { return Pool::get().threads(); }
std::size_t max_num_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return std::max<std::size_t>(16, 4 * std::max<std::size_t>(hw, detect_cpus()));
}
void set_num_threads(std::size_t n) {
  if (n < 1 || n > max_num_threads()) {
    throw std::invalid_argument(
        "set_num_threads expects 1 <= n <= " + std::to_string(max_num_threads()) +
        " (4 threads per CPU of this machine, at least 16), got " + std::to_string(n));
  }
  Pool::get().set_threads(n);
}
std::size_t default_num_threads() { return detect_cpus(); }

namespace detail {
void parallel_run(std::size_t tasks, void (*fn)(void*, std::size_t), void* ctx,
                  std::size_t max_threads) {
  Pool::get().run(tasks, fn, ctx, max_threads);
}
}  // namespace detail

}  // namespace lrk
