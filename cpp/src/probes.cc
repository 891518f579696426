// Machine probes for `lrkernels bench`: the streaming-read bandwidth that bounds batch-1 layers.
// (The FMA peak probes are a kernel family: cpp/kernels/f32-fma-probe/.)
#include "lrkernels/probes.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "lrkernels/aligned_buffer.h"
#include "lrkernels/threadpool.h"

namespace lrk {

double measure_read_bandwidth(std::size_t bytes, double seconds, std::size_t threads) {
  const std::size_t count = std::max<std::size_t>(bytes / sizeof(float), 1 << 16);
  AlignedBuffer buffer(count, sizeof(float));  // the byte size is checked before allocating
  float* data = buffer.as<float>();
  threads = std::min(std::max<std::size_t>(1, threads), max_num_threads());
  // First touch on the threads that will read, so pages are spread as they will be used.
  parallel_for(threads, threads, [&](std::size_t part) {
    std::memset(data + count * part / threads, 0,
                (count * (part + 1) / threads - count * part / threads) * sizeof(float));
  });
  volatile float sink = 0.0f;
  double best = 0.0;
  const auto stop = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  do {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(threads, threads, [&](std::size_t part) {
      // 8 independent sums: the compiler vectorizes this; the loop is bound by memory, not math.
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      const std::size_t begin = count * part / threads, end = count * (part + 1) / threads;
      std::size_t i = begin;
      for (; i + 8 <= end; i += 8) {
        for (int j = 0; j < 8; ++j) acc[j] += data[i + j];
      }
      float total = 0.0f;
      for (int j = 0; j < 8; ++j) total += acc[j];
      sink = sink + total;
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, count * sizeof(float) / dt / 1e9);
  } while (std::chrono::steady_clock::now() < stop);
  return best;
}

}  // namespace lrk
