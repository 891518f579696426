// What the CPU supports, asked of the CPU itself (CPUID + XGETBV on x86, HWCAP on ARM).
// Compiled with baseline flags: it runs before we know any extension is safe.
#include <atomic>
#include <cstring>
#include <string>

#include "lrkernels/dispatch.h"
#include "lrkernels/kernel_config.h"

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#define LRK_X86 1
#include <cpuid.h>
#elif defined(__aarch64__) || defined(__arm__)
#define LRK_ARM 1
#include <sys/auxv.h>
#endif

namespace lrk {
namespace {

#if LRK_X86
unsigned long long read_xcr0() {
  unsigned eax = 0, edx = 0;
  // xgetbv with ECX=0; inline asm because the _xgetbv intrinsic needs -mxsave in this baseline TU.
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

unsigned detect() {
  unsigned mask = 0;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return mask;
  const bool fma = (ecx >> 12) & 1, osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1;
  const bool f16c = (ecx >> 29) & 1;
  if (!osxsave || !avx) return mask;
  const unsigned long long xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;    // XMM and YMM state saved by the OS
  const bool os_zmm = (xcr0 & 0xE6) == 0xE6;  // plus opmask, ZMM0-15 high halves, ZMM16-31
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return mask;
  const bool avx2 = (ebx >> 5) & 1, avx512f = (ebx >> 16) & 1;
  const bool vnni = (ecx >> 11) & 1, fp16 = (edx >> 23) & 1;
  if (avx2 && fma && os_ymm) {
    mask |= kCpuAvx2Fma;
    if (f16c) mask |= kCpuF16c;
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;  // leaf 7 subleaf 1: EAX bit 4 is AVX-VNNI
    if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && ((a1 >> 4) & 1)) mask |= kCpuAvxVnni;
  }
  if (avx512f && avx2 && fma && os_zmm) {
    mask |= kCpuAvx512f;
    if (vnni) mask |= kCpuAvx512Vnni;
    if (fp16) mask |= kCpuAvx512Fp16;
  }
  return mask;
}
#elif LRK_ARM
unsigned detect() {
  unsigned mask = 0;
  const unsigned long hw = getauxval(AT_HWCAP);
#if defined(__aarch64__)
  // Advanced SIMD is mandatory in ARMv8-A Linux ABIs: HWCAP_ASIMD (bit 1); ARMv8.2 extensions:
  // HWCAP_ASIMDHP (bit 10, fp16 arithmetic) and HWCAP_ASIMDDP (bit 20, dot product).
  if (hw & (1ul << 1)) mask |= kCpuNeon;
  if (hw & (1ul << 10)) mask |= kCpuNeonFp16Arith;
  if (hw & (1ul << 20)) mask |= kCpuNeonDot;
#else
  // armv7: HWCAP_NEON (bit 12) and HWCAP_VFPv4 (bit 16, fused multiply-add).
  if ((hw & (1ul << 12)) && (hw & (1ul << 16))) mask |= kCpuNeon;
#endif
  return mask;
}
#else
unsigned detect() { return 0; }
#endif

}  // namespace

unsigned cpu_feature_mask() {
  static const unsigned mask = detect();
  return mask;
}

namespace {
std::atomic<unsigned> g_disabled_features{0};

struct FeatureName {
  unsigned bit;
  const char* name;
};
constexpr FeatureName kFeatureNames[] = {
    {kCpuNeon, "neon"},
    {kCpuNeonFp16Arith, "asimdhp"},
    {kCpuNeonDot, "asimddp"},
    {kCpuAvx2Fma, "avx2"},
    {kCpuF16c, "f16c"},
    {kCpuAvxVnni, "avx_vnni"},
    {kCpuAvx512f, "avx512f"},
    {kCpuAvx512Vnni, "avx512_vnni"},
    {kCpuAvx512Fp16, "avx512_fp16"},
};
}  // namespace

unsigned enabled_cpu_features() {
  return cpu_feature_mask() & ~g_disabled_features.load(std::memory_order_relaxed);
}

void set_disabled_cpu_features(unsigned mask) {
  g_disabled_features.store(mask & kCpuOverridableFeatures, std::memory_order_relaxed);
}

unsigned disabled_cpu_features() { return g_disabled_features.load(std::memory_order_relaxed); }

const char* cpu_feature_name(unsigned bit) {
  for (const FeatureName& f : kFeatureNames) {
    if (f.bit == bit) return f.name;
  }
  return "unknown";
}

unsigned cpu_feature_from_name(const char* name) {
  for (const FeatureName& f : kFeatureNames) {
    if (name != nullptr && std::strcmp(name, f.name) == 0) return f.bit;
  }
  return 0;
}

unsigned cpu_isa_mask() {
  const unsigned f = cpu_feature_mask();
  unsigned mask = 1u << static_cast<int>(Isa::scalar);
  if (f & kCpuNeon) mask |= 1u << static_cast<int>(Isa::neon);
  if (f & kCpuAvx2Fma) mask |= 1u << static_cast<int>(Isa::avx2);
  if (f & kCpuAvx512f) mask |= 1u << static_cast<int>(Isa::avx512);
  return mask;
}

std::string cpu_description() {
#if LRK_X86
  unsigned regs[12] = {};
  unsigned eax;
  if (__get_cpuid(0x80000000u, &eax, &regs[0], &regs[1], &regs[2]) && eax >= 0x80000004u) {
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2],
                  &regs[4 * i + 3]);
    }
    std::string s(reinterpret_cast<const char*>(regs), sizeof(regs));
    s = s.c_str();  // drop trailing NULs
    const auto first = s.find_first_not_of(' ');
    return first == std::string::npos ? std::string("x86") : s.substr(first);
  }
  return "x86";
#elif defined(__aarch64__)
  return "aarch64";
#elif defined(__arm__)
  return "arm";
#else
  return "unknown";
#endif
}

}  // namespace lrk
