// Floating-point mode of lrkernels' computations.
#pragma once

#include <cstdint>

namespace lrk {

// For its scope, subnormal inputs and results are flushed to zero (x86: MXCSR FTZ + DAZ; aarch64:
// FPCR.FZ; armv7: FPSCR.FZ, which NEON always applies anyway); the caller's mode is restored on
// exit. Every layer call and every pool task runs under it, so results do not depend on the thread
// that computes them, and subnormal data cannot make a layer 100x slower (measured: 170-180x with
// AVX-512 microcode assists). Flushing changes results only below 1.2e-38 (FLT_MIN).
class ScopedFlushDenormals {
 public:
  ScopedFlushDenormals();
  ~ScopedFlushDenormals();
  ScopedFlushDenormals(const ScopedFlushDenormals&) = delete;
  ScopedFlushDenormals& operator=(const ScopedFlushDenormals&) = delete;

 private:
  std::uint64_t saved_ = 0;
};

}  // namespace lrk
