// The int8 path's quantization and dequantization (convert-generic.h), vectorized by the compiler
// with the avx512 flags (16 lanes).
#include <immintrin.h>

#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#define LRK_QD8_LANES 16
#include "convert-generic.h"
}  // namespace

extern const QD8RangeFn qd8_convert_range__avx512 = range;
extern const QD8QuantizeFn qd8_convert_quantize__avx512 = quantize;
extern const QD8DequantizeFn qd8_convert_dequantize__avx512 = dequantize;

}  // namespace lrk
