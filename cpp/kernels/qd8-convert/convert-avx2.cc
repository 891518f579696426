// The int8 path's quantization and dequantization (convert-generic.h), vectorized by the compiler
// with the avx2 flags (8 lanes).
#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#define LRK_QD8_LANES 8
#include "convert-generic.h"
}  // namespace

extern const QD8RangeFn qd8_convert_range__avx2 = range;
extern const QD8QuantizeFn qd8_convert_quantize__avx2 = quantize;
extern const QD8DequantizeFn qd8_convert_dequantize__avx2 = dequantize;

}  // namespace lrk
