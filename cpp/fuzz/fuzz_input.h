// The libFuzzer harness's input side (included by layer_fuzzer.cc only): the limits of a case, the
// byte reader that decodes the input format documented at the top of layer_fuzzer.cc, the finding
// and verbose reports, and the deterministic value generator.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lrkernels/dispatch.h"
#include "lrkernels/layer.h"

namespace {

using lrk::Factor;
using lrk::Shape;
using u128 = unsigned __int128;

constexpr std::size_t kMaxFactorElements = std::size_t(1) << 18;  // 1 MiB of float32
constexpr std::size_t kMaxBufferBytes = std::size_t(64) << 20;
constexpr std::size_t kMaxWorkspaceBytes = std::size_t(64) << 20;
constexpr u128 kImpossibleBytes = u128(1) << 42;  // above ASan's largest allocation (1 TiB)
constexpr double kMaxFlops = 5e6;                 // 3 threads need >= 1.5e6 (threads_for_flops)
constexpr double kMaxOracleFlops = 1.5e6;  // includes some two-thread cases (threads_for_flops)

constexpr std::size_t kSpecial[16] = {
    0,
    lrk::kMaxGeometry - 1,
    lrk::kMaxGeometry,
    lrk::kMaxGeometry + 1,
    std::size_t(1) << 31,
    std::size_t(1) << 32,
    (std::size_t(1) << 32) + 1,
    SIZE_MAX / 4,
    SIZE_MAX / 4 + 1,
    static_cast<std::size_t>(PTRDIFF_MAX) / 4,
    static_cast<std::size_t>(PTRDIFF_MAX) / 4 - 15,
    SIZE_MAX / 2 + 1,
    SIZE_MAX - 1,
    SIZE_MAX,
    1025,
    0,  // 0xFF: 8 raw bytes instead
};

struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  std::uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::uint64_t raw(int bytes) {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = v << 8 | byte();
    return v;
  }
  // Mostly lo .. lo + span - 1; sometimes 16-bit; sometimes huge.
  std::size_t size(std::size_t lo, std::size_t span) {
    const std::uint8_t b = byte();
    if (b < 0xE0) return lo + b % std::max<std::size_t>(span, 1);
    if (b < 0xF0) return lo + static_cast<std::size_t>(raw(2));
    if (b == 0xFF) return static_cast<std::size_t>(raw(8));
    return kSpecial[b & 15];
  }
};

// LRK_FUZZ_VERBOSE=1: one line per input saying what the case was and how far it went (for
// reading a reproducer).
bool verbose() {
  static const bool on = [] {
    const char* v = std::getenv("LRK_FUZZ_VERBOSE");
    return v != nullptr && v[0] == '1';
  }();
  return on;
}
void note(const std::string& what) {
  if (verbose()) std::fprintf(stderr, "layer_fuzzer: %s\n", what.c_str());
}

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "\nlayer_fuzzer FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Elements of a shape, or none when the product overflows or exceeds `cap`.
bool elements_within(const Shape& s, std::size_t cap, std::size_t* count) {
  u128 c = 1;
  for (std::size_t d : s) {
    c *= d;
    if (c > cap) return false;
  }
  *count = static_cast<std::size_t>(c);
  return true;
}

// Deterministic values: multiples of 1/8 in [-1, 1] (exact products), with the special modes.
struct Values {
  unsigned mode;
  std::uint32_t state;
  // A linear congruential generator: wraps by design (a build with
  // -fsanitize=unsigned-integer-overflow, which reports unchecked size arithmetic, must not stop
  // here).
  __attribute__((no_sanitize("unsigned-integer-overflow"))) float next() {
    state = state * 1664525u + 1013904223u;
    const int q = static_cast<int>((state >> 16) % 17) - 8;
    switch (mode) {
      case 6:
        return static_cast<float>(q) * 1.25e29f;
      case 7:
        return static_cast<float>(q) * 1e-39f;  // subnormal (flushed by the kernels)
      default:
        return static_cast<float>(q) / 8.0f;
    }
  }
  void fill(std::vector<float>& v) {
    for (float& x : v) x = next();
  }
  bool finite_moderate() const { return mode < 4; }
};

}  // namespace
