#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "lrkernels/gemm.h"

namespace lrk {

void pack_f32_gemm_weights(const void* w_bytes, const void* bias_bytes, std::size_t n,
                           std::size_t k, std::size_t nr, void* dst_bytes) {
  const float* w = static_cast<const float*>(w_bytes);
  const float* bias = static_cast<const float*>(bias_bytes);
  float* dst = static_cast<float*>(dst_bytes);
  const std::size_t panels = (n + nr - 1) / nr, stride = (k + 1) * nr;
  std::memset(dst, 0, panels * stride * sizeof(float));
  for (std::size_t p = 0; p < panels; ++p) {
    float* panel_bias = dst + p * stride;
    const std::size_t col0 = p * nr;
    const std::size_t cols = (n - col0 < nr) ? n - col0 : nr;
    if (bias != nullptr) std::memcpy(panel_bias, bias + col0, cols * sizeof(float));
    float* panel = panel_bias + nr;
    for (std::size_t j = 0; j < cols; ++j) {
      const float* row = w + (col0 + j) * k;
      for (std::size_t kk = 0; kk < k; ++kk) panel[kk * nr + j] = row[kk];
    }
  }
}

PackedWeights::PackedWeights(const float* w, std::size_t n, std::size_t k, const float* bias,
                             const F32GemmConfig& config)
    : config_(&config_for_width(config, n)), n_(n), k_(k), nr_(config_->nr), panel_bytes_(0) {
  if (w == nullptr || n == 0 || k == 0 || nr_ == 0 || config_->pack == nullptr) {
    throw std::invalid_argument("PackedWeights: empty weight matrix or incomplete GEMM config");
  }
  // nr floats of bias + k * nr weights per panel, every size checked in bytes before anything is
  // allocated.
  std::size_t weight_elems = 0;
  if (__builtin_mul_overflow(k, nr_, &weight_elems)) {
    throw std::length_error("packed weights too large");
  }
  const std::size_t weight_bytes =
      checked_bytes(weight_elems, config_->weight_bytes, "packed weights");
  if (__builtin_add_overflow(weight_bytes, nr_ * sizeof(float), &panel_bytes_)) {
    throw std::length_error("packed weights too large");
  }
  data_.resize_bytes(checked_bytes(num_panels(), panel_bytes_, "packed weights"));
  config_->pack(w, bias, n, k, nr_, data_.data());
}

unsigned short fp16_from_float(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // inf or NaN (NaN stays a quiet NaN)
    return static_cast<unsigned short>(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477FF000u) return static_cast<unsigned short>(sign | 0x7C00u);  // rounds past 65504
  if (abs < 0x38800000u) {  // below fp16's smallest normal: a subnormal or zero
    if (abs < 0x33000000u) return static_cast<unsigned short>(sign);  // below half the least
    const std::uint32_t exponent = abs >> 23;
    const std::uint32_t mantissa = (abs & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126 - exponent;  // 14 + (113 - exponent) ... places value in ulps
    std::uint32_t h = mantissa >> shift;
    const std::uint32_t rest = mantissa & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (h & 1u))) ++h;
    return static_cast<unsigned short>(sign | h);
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits.
  std::uint32_t h = ((abs >> 13) - (112u << 10));
  const std::uint32_t rest = abs & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: fine
  return static_cast<unsigned short>(sign | h);
}

float fp16_to_float(unsigned short h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu, x;
  if (exponent == 0x1Fu) {
    x = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    x = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    x = sign;
  } else {  // subnormal: normalize
    exponent = 113;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      --exponent;
    }
    x = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &x, sizeof(f));
  return f;
}

void pack_f16_gemm_weights(const void* w_bytes, const void* bias_bytes, std::size_t n,
                           std::size_t k, std::size_t nr, void* dst_bytes) {
  const float* w = static_cast<const float*>(w_bytes);
  const float* bias = static_cast<const float*>(bias_bytes);
  const std::size_t panels = (n + nr - 1) / nr;
  const std::size_t panel_bytes = nr * sizeof(float) + k * nr * sizeof(std::uint16_t);
  char* dst = static_cast<char*>(dst_bytes);
  std::memset(dst, 0, panels * panel_bytes);
  for (std::size_t p = 0; p < panels; ++p) {
    float* panel_bias = reinterpret_cast<float*>(dst + p * panel_bytes);
    std::uint16_t* panel = reinterpret_cast<std::uint16_t*>(panel_bias + nr);
    const std::size_t col0 = p * nr;
    const std::size_t cols = (n - col0 < nr) ? n - col0 : nr;
    if (bias != nullptr) std::memcpy(panel_bias, bias + col0, cols * sizeof(float));
    for (std::size_t j = 0; j < cols; ++j) {
      const float* row = w + (col0 + j) * k;
      for (std::size_t kk = 0; kk < k; ++kk) panel[kk * nr + j] = fp16_from_float(row[kk]);
    }
  }
}

}  // namespace lrk
