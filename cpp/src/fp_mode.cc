#include "lrkernels/fp_mode.h"

namespace lrk {

// Inline assembly rather than intrinsics: this file is built with the baseline flags like the
// rest of the driver, and each instruction below is part of its architecture's baseline.
#if defined(__x86_64__) || defined(__i386__)
namespace {
constexpr std::uint32_t kFtz = 1u << 15;  // flush results to zero
constexpr std::uint32_t kDaz = 1u << 6;   // treat subnormal inputs as zero
}  // namespace

ScopedFlushDenormals::ScopedFlushDenormals() {
  std::uint32_t csr = 0;
  __asm__ __volatile__("stmxcsr %0" : "=m"(csr));
  saved_ = csr;
  csr |= kFtz | kDaz;
  __asm__ __volatile__("ldmxcsr %0" : : "m"(csr));
}

ScopedFlushDenormals::~ScopedFlushDenormals() {
  std::uint32_t csr = static_cast<std::uint32_t>(saved_);
  __asm__ __volatile__("ldmxcsr %0" : : "m"(csr));
}
#elif defined(__aarch64__)
ScopedFlushDenormals::ScopedFlushDenormals() {
  std::uint64_t fpcr = 0;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
  saved_ = fpcr;
  fpcr |= std::uint64_t(1) << 24;  // FZ
  __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr));
}

ScopedFlushDenormals::~ScopedFlushDenormals() {
  __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_));
}
#elif defined(__arm__) && defined(__ARM_FP)
ScopedFlushDenormals::ScopedFlushDenormals() {
  std::uint32_t fpscr = 0;
  __asm__ __volatile__("vmrs %0, fpscr" : "=r"(fpscr));
  saved_ = fpscr;
  fpscr |= 1u << 24;  // FZ
  __asm__ __volatile__("vmsr fpscr, %0" : : "r"(fpscr));
}

ScopedFlushDenormals::~ScopedFlushDenormals() {
  const std::uint32_t fpscr = static_cast<std::uint32_t>(saved_);
  __asm__ __volatile__("vmsr fpscr, %0" : : "r"(fpscr));
}
#else
ScopedFlushDenormals::ScopedFlushDenormals() {}
ScopedFlushDenormals::~ScopedFlushDenormals() {}
#endif

}  // namespace lrk
