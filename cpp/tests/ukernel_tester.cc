// Micro-kernel tester (in the style of XNNPACK's test/gemm-microkernel-tester.h), without Python
// and without a test framework: every family config of every ISA whose kernel_set() exists on this
// CPU, called directly, against double-precision loops.
//   f32 GEMM (and its narrow variant): every row instantiation 1..mr, nr at the edges of the
//     panel and of its vectors, kc around the unroll factors and up to the config's K block,
//     taps 1/2/3/9, tight and padded strides (lda > kc, ldc > nr), init = packed bias and
//     init = nullptr (accumulate into C), A and C at aligned and unaligned addresses; weights
//     packed with the config's own `pack` into a 64-byte aligned panel; sentinels around C and
//     past column nr.
//   f32 transpose: rows and cols 1..17, 31..33, tight and padded strides, sentinels.
//   f32 dwconv: pixels 1..9, channels 1..17, 31..33, 64, taps 1..7, step > channels, ldo >
//   channels. f32 winograd (F(2x2, 3x3) input and output transforms): tiles 1..5, channels
//   1..20, 31..33, 48, 64, tight and padded strides, odd and even output width, out1 nullptr,
//   bias nullptr, no read past the tiles' input columns, against B^T d B and A^T M A + bias in
//   double within 4 eps of the magnitude. f32 clamp: rows 1..4, cols 1..17, 31..33, 64, tight and
//   padded strides, in place and out of place, relu / relu6 / asymmetric / one-sided / lo == hi
//   bounds on inputs with NaN,
//   +-inf and -0.0, bit for bit (NaN and -0.0 pass unchanged). FMA probe: runs, writes a finite
//   sink and nothing past 16 floats.
// Usage: lrkernels_ukernel_tester [FILTER]   (only families whose name contains FILTER)
// Exit status 0 when every case passes; one FAIL line per failing case (at most 10 per family).
#include "ukernel_tester.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "lrkernels/aligned_buffer.h"
#include "lrkernels/dispatch.h"
#include "lrkernels/kernel_config.h"

namespace {

using lrk_test::is_sentinel;
using lrk_test::sentinel;
using lrk_test::within_bound;

constexpr int kMaxPrintedFailures = 10;
const float kNaN = std::numeric_limits<float>::quiet_NaN();  // padding no kernel may use

struct Family {
  std::string name;
  long cases = 0;
  long failures = 0;
  double seconds = 0;

  // Records one case; prints the failure line (family first, then the case) when it failed.
  void pass() { ++cases; }

  template <class... Args>
  void check(bool ok, const char* fmt, Args... args) {
    ++cases;
    if (ok) return;
    if (++failures <= kMaxPrintedFailures) {
      std::printf("FAIL %s ", name.c_str());
      std::printf(fmt, args...);
      std::printf("\n");
    }
  }
};

// Random values drawn once: cases copy slices at varying offsets (cheap under emulation).
class Pool {
 public:
  explicit Pool(std::mt19937& gen) : v_(lrk_test::random_floats(gen, kSize)) {}
  void fill(float* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      dst[i] = v_[pos_];
      pos_ = (pos_ + 1) & (kSize - 1);
    }
    pos_ = (pos_ + 7919) & (kSize - 1);  // the next case starts elsewhere
  }

 private:
  static constexpr std::size_t kSize = std::size_t(1) << 16;
  std::vector<float> v_;
  std::size_t pos_ = 0;
};

// ---- f32 GEMM ---------------------------------------------------------------------------------

struct GemmCase {
  std::size_t rows, nr, kc, taps, lda, ldc;
  bool use_init;
  std::size_t shift;    // A and C start this many floats past an aligned address
  bool dyadic = false;  // A, W, bias, C rounded to multiples of 1/4: every sum exact in fp16 blocks
};

// The fp16-arithmetic configs ("f16-gemm-*", ARMv8.2 FMLA .8h) round A to fp16 and accumulate
// fp16 products over blocks of at most kF16Block k, adding the block sums into f32. Per block the
// fp16 error is at most (block + 2) u16 times the block's sum of |products| (u16 = 2^-11: one
// rounding of each a, one per FMA, the adds of split accumulator sets, every partial sum being at
// most that block sum), plus 2^-25 absolute per operation below the fp16 normal range (2K of them
// at most, |w| <= 1 here); the f32 additions of the block sums are within error_bound(mag, K).
// Doubled for slack: 2 ((kF16Block + 2) 2^-11 mag + K 2^-24) + error_bound(mag, K), about 3% of
// mag -- loose for a single wrong product at large K, which the dyadic cases catch instead (their
// sums are exact in fp16 and f32, so they must be exact).
constexpr std::size_t kF16Block = 32;
bool fp16_arithmetic(const lrk::F32GemmConfig& cfg) {
  return std::strncmp(cfg.name, "f16-gemm", 8) == 0;
}
double f16_error_bound(double mag, std::size_t terms) {
  return 2 * ((kF16Block + 2) * std::ldexp(mag, -11) + std::ldexp(double(terms), -24)) +
         lrk_test::error_bound(mag, terms);
}

// Multiples of 1/4 in [-1, 1]: products are multiples of 1/16 with |p| <= 1, so sums of up to
// 2^11 / 16 = 128 terms are exact in fp16 and every f32 sum here is exact.
void make_dyadic(float* v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) v[i] = std::round(v[i] * 4.0f) / 4.0f;
}

// One call of cfg.ukernel[rows]: C (rows x nr, stride ldc) = [bias | C] + sum over taps of
// A_t (rows x kc, stride lda) * W_t (kc x nr). W is n x (taps * kc) with n = nr, packed with
// cfg.pack into one panel of width NR.
void gemm_case(const lrk::F32GemmConfig& cfg, const GemmCase& g, Pool& pool, Family& fam) {
  const std::size_t NR = cfg.nr, K = g.taps * g.kc;
  // Weights (n x K row-major) and bias, packed by the config's own packer.
  std::vector<float> w(g.nr * K), bias(g.nr);
  pool.fill(w.data(), w.size());
  pool.fill(bias.data(), bias.size());
  if (g.dyadic) {
    make_dyadic(w.data(), w.size());
    make_dyadic(bias.data(), bias.size());
  }
  // 64-byte aligned, as PackedWeights allocates: NR float biases, then K x NR weights of the
  // config's type (f32, or fp16 for the f16w configs, whose reference uses the rounded weights).
  const std::size_t wb = cfg.weight_bytes;
  lrk::AlignedBuffer pk(NR * sizeof(float) + K * NR * wb, 1);
  float* packed = pk.as<float>();
  std::memset(packed, 0xFF, NR * sizeof(float) + K * NR * wb);  // NaN bits: the packer overwrites
  cfg.pack(w.data(), g.use_init ? bias.data() : nullptr, g.nr, K, NR, packed);
  const float* init = g.use_init ? packed : nullptr;
  const void* panel = packed + NR;
  if (wb == 2) {
    for (float& v : w) v = lrk::fp16_to_float(lrk::fp16_from_float(v));
  }

  // A: one buffer per tap, rows x lda, NaN past column kc.
  std::vector<std::vector<float>> a(g.taps);
  std::vector<const float*> a_ptrs(g.taps);
  for (std::size_t t = 0; t < g.taps; ++t) {
    a[t].assign(g.shift + g.rows * g.lda, kNaN);
    for (std::size_t i = 0; i < g.rows; ++i) {
      pool.fill(&a[t][g.shift + i * g.lda], g.kc);
      if (g.dyadic) make_dyadic(&a[t][g.shift + i * g.lda], g.kc);
    }
    a_ptrs[t] = a[t].data() + g.shift;
  }

  // C: a sentinel row before and after the tile (and NR more floats), sentinels past column nr.
  std::vector<float> cbuf(g.shift + (g.rows + 2) * g.ldc + NR, sentinel());
  float* c = cbuf.data() + g.shift + g.ldc;
  for (std::size_t i = 0; i < g.rows; ++i) {
    pool.fill(c + i * g.ldc, g.nr);
    if (g.dyadic) make_dyadic(c + i * g.ldc, g.nr);
  }
  const std::vector<float> c0(cbuf);

  cfg.ukernel[g.rows](g.nr, g.kc, g.taps, a_ptrs.data(), g.lda, panel, init, c, g.ldc);

  const char* fmt = "rows=%zu nr=%zu kc=%zu taps=%zu lda=%zu ldc=%zu init=%s shift=%zu: %s";
  const char* init_name = g.use_init ? "bias" : "nullptr";
  char what[160];
  for (std::size_t i = 0; i < g.rows; ++i) {
    for (std::size_t j = 0; j < g.nr; ++j) {
      double ref = g.use_init ? bias[j] : c0[g.shift + (i + 1) * g.ldc + j];
      double mag = std::fabs(ref);
      for (std::size_t t = 0; t < g.taps; ++t) {
        for (std::size_t k = 0; k < g.kc; ++k) {
          const double p = double(a_ptrs[t][i * g.lda + k]) * w[j * K + t * g.kc + k];
          ref += p;
          mag += std::fabs(p);
        }
      }
      const float got = c[i * g.ldc + j];
      // fp16 arithmetic: its own bound; dyadic data: exact (every sum is exact in fp16 and f32).
      const double bound = g.dyadic               ? 0.0
                           : fp16_arithmetic(cfg) ? f16_error_bound(mag, K)
                                                  : lrk_test::error_bound(mag, K);
      if (!(std::fabs(double(got) - ref) <= bound)) {  // false for NaN
        std::snprintf(what, sizeof what, "c[%zu][%zu] = %.9g, expected %.9g (bound %.3g)", i, j,
                      double(got), ref, bound);
        fam.check(false, fmt, g.rows, g.nr, g.kc, g.taps, g.lda, g.ldc, init_name, g.shift, what);
        return;
      }
    }
  }
  for (std::size_t e = 0; e < cbuf.size(); ++e) {
    const std::size_t row = (e - g.shift) / g.ldc, col = (e - g.shift) % g.ldc;
    const bool inside = e >= g.shift && row >= 1 && row <= g.rows && col < g.nr;
    if (!inside && !is_sentinel(cbuf[e])) {
      std::snprintf(what, sizeof what,
                    "wrote outside the tile: buffer row %zu (tile row %ld), col %zu", row,
                    long(row) - 1, col);
      fam.check(false, fmt, g.rows, g.nr, g.kc, g.taps, g.lda, g.ldc, init_name, g.shift, what);
      return;
    }
  }
  fam.pass();
}

bool check_gemm_config(const lrk::F32GemmConfig& cfg, Family& fam) {
  bool ok = cfg.mr >= 1 && cfg.mr <= lrk::kMaxMr && cfg.nr >= 1 && cfg.kc >= 1 && cfg.pack;
  for (std::size_t r = 1; ok && r <= cfg.mr; ++r) ok = cfg.ukernel[r] != nullptr;
  fam.check(ok, "config: mr=%zu nr=%zu kc=%zu, a per-row kernel or the packer is missing", cfg.mr,
            cfg.nr, cfg.kc);
  return ok;
}

void test_gemm(const lrk::F32GemmConfig& cfg, Pool& pool, Family& fam) {
  if (!check_gemm_config(cfg, fam)) return;
  const std::size_t NR = cfg.nr;
  // Every column count: the panel edge and the vector edges inside it (4/8/16-float vectors).
  std::vector<std::size_t> nrs;
  for (std::size_t nr = 1; nr <= NR; ++nr) nrs.push_back(nr);
  // Every kc up to 17 (the 4-lane NEON unroll, K split by 2-4 for small tiles), then larger.
  std::vector<std::size_t> kcs;
  for (std::size_t kc = 1; kc <= 17; ++kc) kcs.push_back(kc);
  for (std::size_t kc : {31, 32, 33, 64, 129}) kcs.push_back(kc);
  const std::size_t taps_list[] = {1, 2, 3, 9};
  for (std::size_t rows = 1; rows <= cfg.mr; ++rows) {
    for (std::size_t nr : nrs) {
      for (std::size_t kc : kcs) {
        for (std::size_t taps : taps_list) {
          for (int variant = 0; variant < 4; ++variant) {
            const bool padded = variant & 1;
            GemmCase g{rows,
                       nr,
                       kc,
                       taps,
                       padded ? kc + 3 : kc,
                       padded ? nr + 5 : nr,
                       (variant & 2) == 0,
                       padded ? std::size_t(1) : 0};
            gemm_case(cfg, g, pool, fam);
          }
        }
      }
      // The config's own K block, as the driver calls it (taps 1 and 2, strided).
      for (std::size_t taps : {1, 2}) {
        gemm_case(cfg, GemmCase{rows, nr, cfg.kc, taps, cfg.kc + 1, NR + 1, true, 0}, pool, fam);
        gemm_case(cfg, GemmCase{rows, nr, cfg.kc, taps, cfg.kc, nr, false, 3}, pool, fam);
      }
      if (fp16_arithmetic(cfg)) {
        // Dyadic data, exact in fp16: every product counted once, compared exactly, up to K =
        // 4096 (a wrong or missing product is below the fp16 bound at large K).
        for (std::size_t kc : kcs) {
          for (std::size_t taps : {1, 3}) {
            gemm_case(cfg, GemmCase{rows, nr, kc, taps, kc + 1, nr, (kc & 1) == 0, 1, true}, pool,
                      fam);
          }
        }
        gemm_case(cfg, GemmCase{rows, nr, 4096, 1, 4096, NR, true, 0, true}, pool, fam);
        gemm_case(cfg, GemmCase{rows, nr, cfg.kc, 8, cfg.kc, nr, false, 2, true}, pool, fam);
      }
    }
  }
}

// ---- qd8-f32-qc8w GEMM (int8) -------------------------------------------------------------------

// One call of cfg.ukernel[rows] on int8 data, compared bit for bit with an int64 loop: A values
// cover -128..127 (stored + input_offset), weights -127..127 with runs at the extremes (the
// saturation cases of 16-bit pair sums), sentinels around C.
void qd8_gemm_case(const lrk::QD8GemmConfig& cfg, std::size_t rows, std::size_t nr,
                   std::size_t kgroups, std::size_t taps, std::size_t lda, std::size_t ldc,
                   std::mt19937& gen, Family& fam, bool extremes) {
  const std::size_t NR = cfg.nr, kbytes = 4 * kgroups;
  std::uniform_int_distribution<int> wdist(-127, 127), adist(-128, 127), coin(0, 3);
  // Packed panel: [taps][kgroups][NR][4] int8, zero past column nr.
  std::vector<std::int8_t> panel(taps * kgroups * NR * 4, 0);
  std::vector<int> w(nr * taps * kbytes);  // w[j][t][k]
  for (std::size_t j = 0; j < nr; ++j)
    for (std::size_t t = 0; t < taps; ++t)
      for (std::size_t k = 0; k < kbytes; ++k) {
        int v = wdist(gen);
        if (extremes) v = coin(gen) ? (coin(gen) & 1 ? 127 : -127) : v;
        w[(j * taps + t) * kbytes + k] = v;
        panel[((t * kgroups + k / 4) * NR + j) * 4 + k % 4] = static_cast<std::int8_t>(v);
      }
  std::vector<std::vector<std::int8_t>> a(taps);
  std::vector<const std::int8_t*> a_ptrs(taps);
  for (std::size_t t = 0; t < taps; ++t) {
    a[t].assign(rows * lda + 1, static_cast<std::int8_t>(0x5A));  // junk past each row's K
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t k = 0; k < kbytes; ++k) {
        int q = adist(gen);
        if (extremes) q = coin(gen) ? (coin(gen) & 1 ? 127 : -128) : q;
        a[t][1 + i * lda + k] =
            static_cast<std::int8_t>(static_cast<std::uint8_t>(q + cfg.input_offset));
      }
    a_ptrs[t] = a[t].data() + 1;  // unaligned on purpose
  }
  const std::int32_t kSent = 0x7EADBEEF;
  std::vector<std::int32_t> cbuf((rows + 2) * ldc + NR, kSent);
  std::int32_t* c = cbuf.data() + ldc;
  cfg.ukernel[rows](nr, kgroups, taps, a_ptrs.data(), lda, panel.data(), c, ldc);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < nr; ++j) {
      long long ref = 0;
      for (std::size_t t = 0; t < taps; ++t)
        for (std::size_t k = 0; k < kbytes; ++k) {
          const int q = (cfg.input_offset
                             ? static_cast<int>(static_cast<std::uint8_t>(a_ptrs[t][i * lda + k]))
                             : static_cast<int>(a_ptrs[t][i * lda + k]));
          ref += static_cast<long long>(q) * w[(j * taps + t) * kbytes + k];
        }
      if (c[i * ldc + j] != ref) {
        fam.check(
            false,
            "rows=%zu nr=%zu kgroups=%zu taps=%zu lda=%zu ldc=%zu: c[%zu][%zu] = %d, expected %lld",
            rows, nr, kgroups, taps, lda, ldc, i, j, int(c[i * ldc + j]), ref);
        return;
      }
    }
  for (std::size_t e = 0; e < cbuf.size(); ++e) {
    const std::size_t row = e / ldc, col = e % ldc;
    const bool inside = row >= 1 && row <= rows && col < nr;
    if (!inside && cbuf[e] != kSent) {
      fam.check(
          false,
          "rows=%zu nr=%zu kgroups=%zu taps=%zu: wrote outside the tile (buffer row %zu, col %zu)",
          rows, nr, kgroups, taps, row, col);
      return;
    }
  }
  fam.pass();
}

void test_qd8_gemm(const lrk::QD8GemmConfig& cfg, Pool&, Family& fam) {
  bool ok = cfg.mr >= 1 && cfg.mr <= lrk::kMaxMr && cfg.nr >= 1 &&
            (cfg.input_offset == 0 || cfg.input_offset == 128);
  for (std::size_t r = 1; ok && r <= cfg.mr; ++r) ok = cfg.ukernel[r] != nullptr;
  fam.check(ok, "config: mr=%zu nr=%zu offset=%d, a per-row kernel is missing", cfg.mr, cfg.nr,
            cfg.input_offset);
  if (!ok) return;
  std::mt19937 gen(1234);
  for (std::size_t rows = 1; rows <= cfg.mr; ++rows)
    for (std::size_t nr = 1; nr <= cfg.nr; ++nr)
      for (std::size_t kgroups : {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33})
        for (std::size_t taps : {1, 2, 9}) {
          const bool padded = (nr + kgroups) & 1;
          const std::size_t lda = 4 * kgroups + (padded ? 5 : 0), ldc = nr + (padded ? 3 : 0);
          qd8_gemm_case(cfg, rows, nr, kgroups, taps, lda, ldc, gen, fam, (kgroups & 2) != 0);
        }
  // Long K at the extremes: 16-bit pair sums and int32 totals must not overflow (K = 4096).
  for (std::size_t rows = 1; rows <= cfg.mr; ++rows)
    qd8_gemm_case(cfg, rows, cfg.nr, 1024, 1, 4096, cfg.nr, gen, fam, true);
}

// ---- f32 transpose ----------------------------------------------------------------------------

void test_transpose(const lrk::F32TransposeConfig& cfg, Pool& pool, Family& fam) {
  fam.check(cfg.transpose != nullptr, "config: no transpose kernel");
  if (!cfg.transpose) return;
  std::vector<std::size_t> sizes;
  for (std::size_t s = 1; s <= 17; ++s) sizes.push_back(s);
  for (std::size_t s : {31, 32, 33}) sizes.push_back(s);
  constexpr std::size_t kGuard = 16;
  for (std::size_t rows : sizes) {
    for (std::size_t cols : sizes) {
      for (int padded = 0; padded < 2; ++padded) {
        const std::size_t lds = cols + (padded ? 3 : 0), ldd = rows + (padded ? 5 : 0);
        std::vector<float> src(rows * lds, kNaN);
        for (std::size_t i = 0; i < rows; ++i) pool.fill(&src[i * lds], cols);
        std::vector<float> dbuf(kGuard + cols * ldd + kGuard, sentinel());
        float* dst = dbuf.data() + kGuard;
        cfg.transpose(src.data(), rows, cols, lds, dst, ldd);
        bool ok = true;
        std::size_t bad = 0;
        for (std::size_t e = 0; ok && e < dbuf.size(); ++e) {
          const long off = long(e) - long(kGuard);
          const bool inside =
              off >= 0 && std::size_t(off) < cols * ldd && std::size_t(off) % ldd < rows;
          if (inside) {
            const std::size_t j = std::size_t(off) / ldd, i = std::size_t(off) % ldd;
            ok = std::memcmp(&dbuf[e], &src[i * lds + j], sizeof(float)) == 0;
          } else {
            ok = is_sentinel(dbuf[e]);
          }
          bad = e;
        }
        fam.check(ok, "rows=%zu cols=%zu lds=%zu ldd=%zu: wrong or stray value at dst[%ld]", rows,
                  cols, lds, ldd, long(bad) - long(kGuard));
      }
    }
  }
}

// ---- f32 depthwise taps -----------------------------------------------------------------------

void test_dwconv(const lrk::F32DwconvConfig& cfg, Pool& pool, Family& fam) {
  fam.check(cfg.depthwise != nullptr, "config: no depthwise kernel");
  if (!cfg.depthwise) return;
  std::vector<std::size_t> channel_list;
  for (std::size_t s = 1; s <= 17; ++s) channel_list.push_back(s);
  for (std::size_t s : {31, 32, 33, 64}) channel_list.push_back(s);
  constexpr std::size_t kGuard = 16;
  for (std::size_t pixels = 1; pixels <= 9; ++pixels) {
    for (std::size_t channels : channel_list) {
      for (std::size_t taps = 1; taps <= 7; ++taps) {
        for (int padded = 0; padded < 2; ++padded) {
          // step > channels: the strided horizontal stage; ldo > channels: a wider output row.
          const std::size_t step = padded ? 2 * channels + 1 : channels;
          const std::size_t ldo = channels + (padded ? 4 : 0);
          std::vector<float> weights(taps * channels);
          pool.fill(weights.data(), weights.size());
          std::vector<std::vector<float>> src(taps);
          std::vector<const float*> src_ptrs(taps);
          for (std::size_t t = 0; t < taps; ++t) {
            src[t].assign((pixels - 1) * step + channels, kNaN);  // no slack past the last pixel
            for (std::size_t p = 0; p < pixels; ++p) pool.fill(&src[t][p * step], channels);
            src_ptrs[t] = src[t].data();
          }
          std::vector<float> obuf(kGuard + pixels * ldo + kGuard, sentinel());
          float* out = obuf.data() + kGuard;
          cfg.depthwise(pixels, channels, taps, src_ptrs.data(), step, weights.data(), out, ldo);
          char what[128] = "";
          for (std::size_t e = 0; what[0] == 0 && e < obuf.size(); ++e) {
            const long off = long(e) - long(kGuard);
            const bool inside =
                off >= 0 && std::size_t(off) < pixels * ldo && std::size_t(off) % ldo < channels;
            if (inside) {
              const std::size_t p = std::size_t(off) / ldo, ch = std::size_t(off) % ldo;
              double ref = 0, mag = 0;
              for (std::size_t t = 0; t < taps; ++t) {
                const double v = double(weights[t * channels + ch]) * src[t][p * step + ch];
                ref += v;
                mag += std::fabs(v);
              }
              if (!within_bound(obuf[e], ref, mag, taps)) {
                std::snprintf(what, sizeof what, "out[%zu][%zu] = %.9g, expected %.9g", p, ch,
                              double(obuf[e]), ref);
              }
            } else if (!is_sentinel(obuf[e])) {
              std::snprintf(what, sizeof what, "wrote outside the output at out[%ld]", off);
            }
          }
          fam.check(what[0] == 0, "pixels=%zu channels=%zu taps=%zu step=%zu ldo=%zu: %s", pixels,
                    channels, taps, step, ldo, what);
        }
      }
    }
  }
}

// ---- f32 Winograd F(2x2, 3x3) transforms ------------------------------------------------------

// The matrices of winograd-generic.h's header comment.
constexpr double kWinogradBT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
constexpr double kWinogradAT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};

// Both transforms against B^T d B and A^T M A + bias in double (matrix products, not the kernel's
// order of additions). Tolerance: 4 eps times the sum of the absolute terms. The kernels only add:
// an input point is a tree of 3 additions of 4 terms (depth 2), an output point a chain of at most
// 5 additions of 10 (9 terms and the bias), so a float result is within 5 u = 2.5 eps of that
// magnitude (first order) in any order of the additions.
// Cases: tiles 1..5, channels 1..20, 31, 32, 33, 48, 64 (around every kBlock: 4, 8, 16), tight
// and padded strides (v_stride > tiles * ldv, ldv > channels; the same for m; ldo > channels), an
// odd output width (the last tile's second column is not written) and an even one, out1 nullptr
// (the second output row is not written), bias nullptr or not. The input rows hold exactly columns
// 0..2 tiles + 1 with NaN between and around them: reading past them makes a point non-finite.
// Sentinels around and between every written element; the spill area is the kernel's own, only
// its guards are checked.
bool winograd_close(float got, double ref, double mag) {
  return std::fabs(double(got) - ref) <= 4 * lrk_test::kEps * mag;  // false for NaN
}

void test_winograd(const lrk::F32WinogradConfig& cfg, Pool& pool, Family& fam) {
  fam.check(cfg.input != nullptr && cfg.output != nullptr, "config: missing a transform");
  if (!cfg.input || !cfg.output) return;
  std::vector<std::size_t> channel_list;
  for (std::size_t s = 1; s <= 20; ++s) channel_list.push_back(s);
  for (std::size_t s : {31, 32, 33, 48, 64}) channel_list.push_back(s);
  constexpr std::size_t kGuard = 16;
  for (std::size_t tiles = 1; tiles <= 5; ++tiles) {
    for (std::size_t channels : channel_list) {
      for (int padded = 0; padded < 2; ++padded) {
        const std::size_t ldv = channels + (padded ? 3 : 0);
        const std::size_t v_stride = tiles * ldv + (padded ? 5 : 0);
        // Input: four rows of 2 tiles + 2 pixels, each between NaN gaps of two pixels and more.
        const std::size_t row_len = (2 * tiles + 2) * channels, gap = 2 * channels + 3;
        std::vector<float> rows_buf(gap + 4 * (row_len + gap), kNaN);
        const float* rows[4];
        for (std::size_t r = 0; r < 4; ++r) {
          float* row = rows_buf.data() + gap + r * (row_len + gap);
          pool.fill(row, row_len);
          rows[r] = row;
        }
        std::vector<float> vbuf(kGuard + 16 * v_stride + kGuard, sentinel());
        float* v = vbuf.data() + kGuard;
        cfg.input(tiles, channels, rows, v, v_stride, ldv);
        char what[160] = "";
        for (std::size_t e = 0; what[0] == 0 && e < vbuf.size(); ++e) {
          const long off = long(e) - long(kGuard);
          const std::size_t xi = off >= 0 ? std::size_t(off) / v_stride : 0;
          const std::size_t in_point = off >= 0 ? std::size_t(off) % v_stride : 0;
          const bool inside =
              off >= 0 && xi < 16 && in_point < tiles * ldv && in_point % ldv < channels;
          if (inside) {
            const std::size_t t = in_point / ldv, c = in_point % ldv, i = xi / 4, j = xi % 4;
            double ref = 0, mag = 0;
            for (std::size_t k = 0; k < 4; ++k) {
              for (std::size_t l = 0; l < 4; ++l) {
                const double term =
                    kWinogradBT[i][k] * rows[k][(2 * t + l) * channels + c] * kWinogradBT[j][l];
                ref += term;
                mag += std::fabs(term);
              }
            }
            if (!winograd_close(vbuf[e], ref, mag)) {
              std::snprintf(what, sizeof what,
                            "v point %zu tile %zu channel %zu = %.9g, expected %.9g", xi, t, c,
                            double(vbuf[e]), ref);
            }
          } else if (!is_sentinel(vbuf[e])) {
            std::snprintf(what, sizeof what, "input wrote outside the points at v[%ld]", off);
          }
        }
        fam.check(what[0] == 0, "input tiles=%zu channels=%zu v_stride=%zu ldv=%zu: %s", tiles,
                  channels, v_stride, ldv, what);

        const std::size_t ldm = channels + (padded ? 5 : 0);
        const std::size_t m_stride = tiles * ldm + (padded ? 3 : 0);
        const std::size_t ldo = channels + (padded ? 2 : 0);
        std::vector<float> m(16 * m_stride, kNaN);  // padding NaN: a kernel that reads it fails
        for (std::size_t xi = 0; xi < 16; ++xi)
          for (std::size_t t = 0; t < tiles; ++t) pool.fill(&m[xi * m_stride + t * ldm], channels);
        std::vector<float> bias_values(channels);
        pool.fill(bias_values.data(), channels);
        for (std::size_t width : {2 * tiles - 1, 2 * tiles}) {
          for (int two_rows = 0; two_rows < 2; ++two_rows) {
            for (int with_bias = 0; with_bias < 2; ++with_bias) {
              // out0, a gap, out1: one buffer, sentinels around, between and inside (ldo > c);
              // a pixel and more after each row, so a write of column `width` lands on sentinels.
              const std::size_t row_floats = width * ldo, row_gap = ldo + 7;
              std::vector<float> obuf(kGuard + 2 * row_floats + row_gap + ldo + kGuard, sentinel());
              float* out0 = obuf.data() + kGuard;
              float* out1 = two_rows ? out0 + row_floats + row_gap : nullptr;
              std::vector<float> spill(kGuard + 3 * channels + kGuard, sentinel());
              const float* bias = with_bias ? bias_values.data() : nullptr;
              cfg.output(tiles, channels, m.data(), m_stride, ldm, bias, width, out0, out1, ldo,
                         spill.data() + kGuard);
              what[0] = 0;
              for (std::size_t e = 0; what[0] == 0 && e < obuf.size(); ++e) {
                const long off = long(e) - long(kGuard);
                std::size_t i = 0, rel = 0;
                bool inside = false;
                if (off >= 0 && std::size_t(off) < row_floats) {
                  inside = true;
                  rel = std::size_t(off);
                } else if (out1 != nullptr && off >= long(row_floats + row_gap) &&
                           std::size_t(off) < 2 * row_floats + row_gap) {
                  inside = true;
                  i = 1;
                  rel = std::size_t(off) - row_floats - row_gap;
                }
                inside = inside && rel % ldo < channels;
                if (inside) {
                  const std::size_t x = rel / ldo, c = rel % ldo, t = x / 2, j = x % 2;
                  double ref = bias ? double(bias[c]) : 0.0, mag = std::fabs(ref);
                  for (std::size_t k = 0; k < 4; ++k) {
                    for (std::size_t l = 0; l < 4; ++l) {
                      const double term = kWinogradAT[i][k] *
                                          m[(4 * k + l) * m_stride + t * ldm + c] *
                                          kWinogradAT[j][l];
                      ref += term;
                      mag += std::fabs(term);
                    }
                  }
                  if (!winograd_close(obuf[e], ref, mag)) {
                    std::snprintf(what, sizeof what, "out%zu[%zu][%zu] = %.9g, expected %.9g", i, x,
                                  c, double(obuf[e]), ref);
                  }
                } else if (!is_sentinel(obuf[e])) {
                  std::snprintf(what, sizeof what, "wrote outside the outputs at out0[%ld]", off);
                }
              }
              for (std::size_t g = 0; what[0] == 0 && g < kGuard; ++g) {
                if (!is_sentinel(spill[g]) || !is_sentinel(spill[kGuard + 3 * channels + g]))
                  std::snprintf(what, sizeof what, "wrote outside the spill area");
              }
              fam.check(what[0] == 0,
                        "output tiles=%zu channels=%zu m_stride=%zu ldm=%zu width=%zu ldo=%zu "
                        "out1=%s bias=%s: %s",
                        tiles, channels, m_stride, ldm, width, ldo, out1 ? "yes" : "nullptr",
                        bias ? "yes" : "nullptr", what);
            }
          }
        }
      }
    }
  }
}

// ---- f32 clamp --------------------------------------------------------------------------------

void test_clamp(const lrk::F32ClampConfig& cfg, Pool& pool, Family& fam) {
  fam.check(cfg.clamp != nullptr, "config: no clamp kernel");
  if (!cfg.clamp) return;
  const float inf = std::numeric_limits<float>::infinity();
  const float bounds[][2] = {{0.0f, inf},   {0.0f, 6.0f},  {-0.7f, 0.3f},
                             {-inf, 0.25f}, {-1e-3f, inf}, {0.5f, 0.5f}};
  std::vector<std::size_t> col_list;
  for (std::size_t s = 1; s <= 17; ++s) col_list.push_back(s);
  for (std::size_t s : {31, 32, 33, 64}) col_list.push_back(s);
  const float specials[] = {kNaN, inf, -inf, -0.0f, 0.0f, 6.0f, 1e-40f, -1e-40f};
  constexpr std::size_t kGuard = 16;
  for (const auto& b : bounds) {
    const float lo = b[0], hi = b[1];
    for (std::size_t rows = 1; rows <= 4; ++rows) {
      for (std::size_t cols : col_list) {
        for (int mode = 0; mode < 3; ++mode) {  // 0 tight, 1 padded strides, 2 in place
          const std::size_t ldi = cols + (mode == 1 ? 3 : 0), ldo = cols + (mode == 1 ? 5 : 0);
          std::vector<float> in(rows * ldi, kNaN);
          for (std::size_t i = 0; i < rows; ++i) {
            pool.fill(&in[i * ldi], cols);
            for (std::size_t j = 0; j < cols; ++j) in[i * ldi + j] *= 8.0f;
            in[i * ldi + (i * 7) % cols] = specials[(i + cols) % 8];
            in[i * ldi + (i * 3 + cols / 2) % cols] = specials[(i + cols + 3) % 8];
          }
          std::vector<float> obuf(kGuard + rows * ldo + kGuard, sentinel());
          float* out = obuf.data() + kGuard;
          if (mode == 2) {
            for (std::size_t i = 0; i < rows; ++i)
              std::memcpy(out + i * ldo, &in[i * ldi], cols * sizeof(float));
            cfg.clamp(rows, cols, out, ldo, out, ldo, lo, hi);
          } else {
            cfg.clamp(rows, cols, in.data(), ldi, out, ldo, lo, hi);
          }
          char what[160] = "";
          for (std::size_t e = 0; what[0] == 0 && e < obuf.size(); ++e) {
            const long off = long(e) - long(kGuard);
            const bool inside =
                off >= 0 && std::size_t(off) < rows * ldo && std::size_t(off) % ldo < cols;
            if (inside) {
              const std::size_t i = std::size_t(off) / ldo, j = std::size_t(off) % ldo;
              float want = in[i * ldi + j];
              want = want < lo ? lo : want;  // NaN and -0.0 (under lo = 0) pass unchanged
              want = want > hi ? hi : want;
              if (std::memcmp(&want, &obuf[e], sizeof(float)) != 0) {
                std::snprintf(what, sizeof what, "out[%zu][%zu] = %.9g for in %.9g, expected %.9g",
                              i, j, double(obuf[e]), double(in[i * ldi + j]), double(want));
              }
            } else if (!is_sentinel(obuf[e])) {
              std::snprintf(what, sizeof what, "wrote outside the output at out[%ld]", off);
            }
          }
          fam.check(what[0] == 0, "lo=%g hi=%g rows=%zu cols=%zu ldi=%zu ldo=%zu%s: %s", double(lo),
                    double(hi), rows, cols, ldi, ldo, mode == 2 ? " in place" : "", what);
        }
      }
    }
  }
}

// ---- recurrent cells -----------------------------------------------------------------------------

double sigmoid64(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// LSTM and GRU cells against double precision, every hidden size 1..40 (the vector bodies and
// their tails) and a few larger, batch 1..3 with padded strides; pre-activations spread over
// [-24, 24] (saturation), tiny values (tanh's cancellation region), and +-inf. A few ulp of the
// exact functions: absolute 3e-6 on outputs within [-1, 1] and relative on the cell state.
void test_rnn(const lrk::F32RnnConfig& cfg, Pool& pool, Family& fam) {
  fam.check(cfg.lstm_cell != nullptr && cfg.gru_cell != nullptr, "config: missing a cell kernel");
  if (!cfg.lstm_cell || !cfg.gru_cell) return;
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<std::size_t> sizes;
  for (std::size_t h = 1; h <= 40; ++h) sizes.push_back(h);
  for (std::size_t h : {63, 64, 65, 130}) sizes.push_back(h);
  for (int lstm = 0; lstm <= 1; ++lstm) {
    const std::size_t g = lstm ? 4 : 3;
    for (std::size_t hid : sizes) {
      for (std::size_t batch = 1; batch <= 3; ++batch) {
        const std::size_t ldg = g * hid + 3, lds = hid + 2;
        std::vector<float> gx(batch * ldg), gh(batch * ldg), c(batch * lds), prev(batch * lds);
        pool.fill(gx.data(), gx.size());
        pool.fill(gh.data(), gh.size());
        pool.fill(c.data(), c.size());
        pool.fill(prev.data(), prev.size());
        for (std::size_t i = 0; i < gx.size(); ++i) {
          const float scale = (i % 5 == 0) ? 12.0f : (i % 5 == 1 ? 1e-3f : 2.0f);
          gx[i] *= scale;
        }
        gx[(hid * 5) % gx.size()] = inf;
        gx[(hid * 7 + 1) % gx.size()] = -inf;
        std::vector<float> h(batch * lds, sentinel()), c_in = c;
        if (lstm) {
          cfg.lstm_cell(batch, hid, gx.data(), ldg, gh.data(), ldg, c.data(), lds, h.data(), lds);
        } else {
          cfg.gru_cell(batch, hid, gx.data(), ldg, gh.data(), ldg, prev.data(), lds, h.data(), lds);
        }
        char what[200] = "";
        for (std::size_t b = 0; what[0] == 0 && b < batch; ++b) {
          const float* x = &gx[b * ldg];
          const float* r = &gh[b * ldg];
          for (std::size_t j = 0; what[0] == 0 && j < lds; ++j) {
            const float got = h[b * lds + j];
            if (j >= hid) {
              if (!is_sentinel(got)) std::snprintf(what, sizeof what, "wrote h[%zu][%zu]", b, j);
              continue;
            }
            double want, want_c = 0;
            if (lstm) {
              auto pre = [&](std::size_t k) { return double(x[k * hid + j]) + r[k * hid + j]; };
              want_c =
                  sigmoid64(pre(1)) * c_in[b * lds + j] + sigmoid64(pre(0)) * std::tanh(pre(2));
              want = sigmoid64(pre(3)) * std::tanh(want_c);
            } else {
              const double rg = sigmoid64(double(x[j]) + r[j]);
              const double z = sigmoid64(double(x[hid + j]) + r[hid + j]);
              const double n = std::tanh(double(x[2 * hid + j]) + rg * r[2 * hid + j]);
              want = (1 - z) * n + z * prev[b * lds + j];
            }
            const double tol = 3e-6 * (1.0 + std::fabs(want));
            if (!(std::fabs(got - want) <= tol)) {
              std::snprintf(what, sizeof what, "h[%zu][%zu] = %.9g, expected %.9g", b, j,
                            double(got), want);
            } else if (lstm) {
              const double gc = c[b * lds + j];
              if (!(std::fabs(gc - want_c) <= 3e-6 * (1.0 + std::fabs(want_c)))) {
                std::snprintf(what, sizeof what, "c[%zu][%zu] = %.9g, expected %.9g", b, j, gc,
                              want_c);
              }
            }
          }
        }
        fam.check(what[0] == 0, "%s hidden=%zu batch=%zu: %s", lstm ? "lstm" : "gru", hid, batch,
                  what);
      }
    }
  }
  // NaN in a pre-activation gives NaN in that unit only.
  std::vector<float> gx(8, 0.5f), gh(8, 0.25f), c(2, 0.1f), h(2, 0.0f);
  gx[1] = std::numeric_limits<float>::quiet_NaN();  // the i gate of unit 1
  cfg.lstm_cell(1, 2, gx.data(), 8, gh.data(), 8, c.data(), 2, h.data(), 2);
  fam.check(std::isnan(h[1]) && std::isnan(c[1]) && std::isfinite(h[0]), "lstm NaN: h = %g %g",
            double(h[0]), double(h[1]));
}

// ---- FMA probe --------------------------------------------------------------------------------

void test_fma_probe(const lrk::FmaProbeConfig& cfg, Family& fam) {
  fam.check(cfg.probe != nullptr && cfg.flops_per_iteration > 0,
            "config: probe=%p flops_per_iteration=%zu", reinterpret_cast<void*>(cfg.probe),
            cfg.flops_per_iteration);
  if (!cfg.probe) return;
  // The widest probe stores one 16-float vector; every probe stores at least 4 floats.
  constexpr std::size_t kSinkFloats = 16, kGuard = 16;
  for (std::size_t iterations : {0, 1, 1000, 100000}) {
    std::vector<float> sink(kSinkFloats + kGuard, sentinel());
    cfg.probe(iterations, sink.data());
    bool finite = true, guard = true;
    for (std::size_t i = 0; i < 4; ++i) finite = finite && std::isfinite(sink[i]);
    for (std::size_t i = 4; i < kSinkFloats; ++i) {
      finite = finite && (is_sentinel(sink[i]) || std::isfinite(sink[i]));
    }
    for (std::size_t i = kSinkFloats; i < sink.size(); ++i) guard = guard && is_sentinel(sink[i]);
    fam.check(finite && guard, "iterations=%zu: sink[0]=%g, %s", iterations, double(sink[0]),
              !finite ? "a non-finite sink value" : "wrote past 16 floats");
  }
}

// ---- driver -----------------------------------------------------------------------------------

struct Runner {
  std::string filter;
  // Totals only (a std::vector<Family> draws GCC's armv7 -Wpsabi note on its iterators).
  long families = 0, cases = 0, failures = 0;
  std::set<const void*> seen;  // a config reached from two ISAs (or as a narrow variant) runs once
  std::mt19937 gen{20240601};
  Pool pool{gen};

  template <class Fn>
  void run(const void* config, const char* name, Fn fn) {
    if (config == nullptr || !seen.insert(config).second) return;
    if (!filter.empty() && std::string(name).find(filter) == std::string::npos) return;
    Family fam;
    fam.name = name;
    const auto t0 = std::chrono::steady_clock::now();
    fn(fam);
    fam.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-28s %7ld cases  %5ld failed  %7.2f s\n", fam.name.c_str(), fam.cases,
                fam.failures, fam.seconds);
    std::fflush(stdout);
    ++families;
    cases += fam.cases;
    failures += fam.failures;
  }

  void gemm(const lrk::F32GemmConfig* cfg) {
    for (; cfg != nullptr; cfg = cfg->narrow) {
      run(cfg, cfg->name ? cfg->name : "(unnamed f32-gemm)",
          [&](Family& f) { test_gemm(*cfg, pool, f); });
    }
  }
  void qd8_gemm(const lrk::QD8GemmConfig* cfg) {
    run(cfg, cfg->name ? cfg->name : "(unnamed qd8-gemm)",
        [&](Family& f) { test_qd8_gemm(*cfg, pool, f); });
  }
};

}  // namespace

int main(int argc, char** argv) {
  Runner runner;
  if (argc > 1) runner.filter = argv[1];
  std::printf("lrkernels micro-kernel tester on %s\n", lrk::cpu_description().c_str());
  const auto t0 = std::chrono::steady_clock::now();
  int isas = 0;
  for (int i = 0; i < lrk::kNumIsas; ++i) {
    const lrk::Isa isa = static_cast<lrk::Isa>(i);
    const lrk::KernelSet* ks = lrk::kernel_set(isa);
    if (ks == nullptr) {
      std::printf("-- isa %s: no kernel set (not built or not supported by this CPU)\n",
                  lrk::isa_name(isa));
      continue;
    }
    ++isas;
    std::printf("-- isa %s\n", lrk::isa_name(isa));
    runner.gemm(ks->f32_gemm);
    for (const auto* c : lrk::f16w_gemm_configs(isa)) runner.gemm(c);
    for (const auto* c : lrk::qd8_gemm_configs(isa)) runner.qd8_gemm(c);
    if (const auto* c = ks->f32_transpose) {
      runner.run(c, c->name, [&](Family& f) { test_transpose(*c, runner.pool, f); });
    }
    if (const auto* c = ks->f32_dwconv) {
      runner.run(c, c->name, [&](Family& f) { test_dwconv(*c, runner.pool, f); });
    }
    if (const auto* c = ks->f32_winograd) {
      runner.run(c, c->name, [&](Family& f) { test_winograd(*c, runner.pool, f); });
    }
    if (const auto* c = ks->f32_clamp) {
      runner.run(c, c->name, [&](Family& f) { test_clamp(*c, runner.pool, f); });
    }
    if (const auto* c = ks->f32_rnn) {
      runner.run(c, c->name, [&](Family& f) { test_rnn(*c, runner.pool, f); });
    }
    if (const auto* c = ks->fma_probe) {
      runner.run(c, c->name, [&](Family& f) { test_fma_probe(*c, f); });
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d ISAs, %ld families, %ld cases, %ld failed, %.2f s\n", isas, runner.families,
              runner.cases, runner.failures, seconds);
  if (isas == 0 || runner.families == 0) {
    std::printf("FAIL no kernel family was tested\n");
    return 1;
  }
  return runner.failures == 0 ? 0 : 1;
}
