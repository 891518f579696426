// Helpers shared by the C++ self-tests (ukernel_tester.cc, gemm_selftest.cc): random data, the
// elementwise error bound, sentinels. No test framework: a test is a main() with an exit status.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace lrk_test {

constexpr double kEps = 1.1920929e-07;  // float32 machine epsilon

// |got - ref| <= 8 eps (terms + 2) * mag, where mag is the same sum over absolute values: the bound
// of a float32 sum of `terms` products in any order (fused or not), with slack for the rounding
// of intermediates in a chain. The same bound as the Python tests use for the layers.
inline double error_bound(double mag, std::size_t terms) {
  return 8 * kEps * double(terms + 2) * mag + 1e-30;
}
inline bool within_bound(float got, double ref, double mag, std::size_t terms) {
  return std::fabs(double(got) - ref) <= error_bound(mag, terms);  // false for NaN
}

inline std::vector<float> random_floats(std::mt19937& gen, std::size_t n, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// A value no kernel computes from the test data: a NaN with a payload, compared bit for bit.
inline float sentinel() {
  const std::uint32_t bits = 0x7FC0BEEFu;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline bool is_sentinel(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits == 0x7FC0BEEFu;
}

}  // namespace lrk_test
