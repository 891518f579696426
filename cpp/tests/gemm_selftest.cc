// Standalone check of every available ISA's GEMM and fused low-rank path against a double-precision
// loop, without Python: runs under qemu on a statically linked cross build, and under sanitizers.
// Exit status 0 when all cases pass.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "lrkernels/dispatch.h"
#include "lrkernels/gemm.h"
#include "lrkernels/layers.h"

namespace {

std::vector<float> random_matrix(std::mt19937& gen, std::size_t n) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// |y - ref| <= 8 eps (terms + 2) * magnitude, elementwise.
bool close(const std::vector<float>& y, const std::vector<double>& ref,
           const std::vector<double>& mag, std::size_t terms) {
  const double eps = 1.1920929e-07;
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (!(std::fabs(y[i] - ref[i]) <= 8 * eps * (terms + 2) * mag[i] + 1e-30)) return false;
  }
  return true;
}

}  // namespace

int main() {
  std::mt19937 gen(42);
  const std::size_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65};
  const std::size_t ranks[] = {1, 3, 8, 17, 64};
  const std::size_t batches[] = {0, 1, 2, 3, 5, 7, 8, 9, 13, 17, 40};
  int failures = 0, cases = 0;
  for (int isa_index = 0; isa_index < lrk::kNumIsas; ++isa_index) {
    const auto isa = static_cast<lrk::Isa>(isa_index);
    if (!(lrk::available_isa_mask() & (1u << isa_index))) continue;
    lrk::set_active_isa(isa);
    for (int blocked = 0; blocked < 2; ++blocked) {
      lrk::Blocking b;
      if (blocked) b.kc = 5, b.nc = 1, b.mc = 1, b.mb = 1;  // rounded up to one tile
      lrk::set_blocking_override(b);
      for (std::size_t in : sizes) {
        for (std::size_t out : sizes) {
          for (std::size_t rank : ranks) {
            for (std::size_t batch : batches) {
              auto u = random_matrix(gen, out * rank), v = random_matrix(gen, rank * in);
              auto bias = random_matrix(gen, out), x = random_matrix(gen, batch * in);
              lrk::LowRankLinearLayer layer(u.data(), out, rank, v.data(), in, bias.data());
              std::vector<float> y(batch * out, NAN);
              layer.forward(batch, x.data(), in, y.data(), out);
              std::vector<double> ref(batch * out), mag(batch * out);
              for (std::size_t m = 0; m < batch; ++m) {
                std::vector<double> t(rank), ta(rank);
                for (std::size_t r = 0; r < rank; ++r) {
                  for (std::size_t k = 0; k < in; ++k) {
                    t[r] += double(v[r * in + k]) * x[m * in + k];
                    ta[r] += std::fabs(double(v[r * in + k]) * x[m * in + k]);
                  }
                }
                for (std::size_t o = 0; o < out; ++o) {
                  double s = bias[o], sa = std::fabs(bias[o]);
                  for (std::size_t r = 0; r < rank; ++r) {
                    s += double(u[o * rank + r]) * t[r];
                    sa += std::fabs(double(u[o * rank + r])) * ta[r];
                  }
                  ref[m * out + o] = s;
                  mag[m * out + o] = sa;
                }
              }
              ++cases;
              if (!close(y, ref, mag, in + rank) || lrk::last_used_isa() != isa_index) {
                if (++failures <= 10) {
                  std::printf("FAIL isa=%s blocked=%d in=%zu out=%zu rank=%zu batch=%zu\n",
                              lrk::isa_name(isa), blocked, in, out, rank, batch);
                }
              }
            }
          }
        }
      }
    }
    std::printf("isa %s checked\n", lrk::isa_name(isa));
  }
  lrk::set_blocking_override(lrk::Blocking());
  std::printf("%d passed, %d failed\n", cases - failures, failures);
  return failures == 0 ? 0 : 1;
}
