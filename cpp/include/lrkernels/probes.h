#pragma once

#include <cstddef>

namespace lrk {

// Best streaming-read bandwidth in GB/s over `seconds`, reading a `bytes` buffer on `threads`
// threads (pick bytes well above the last-level cache to measure DRAM).
double measure_read_bandwidth(std::size_t bytes, double seconds, std::size_t threads);

}  // namespace lrk
