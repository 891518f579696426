// The int8 path's quantization and dequantization (convert-generic.h), vectorized by the compiler
// with the neon flags (4 lanes).
#include <cstdint>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#define LRK_QD8_LANES 4
#include "convert-generic.h"
}  // namespace

extern const QD8RangeFn qd8_convert_range__neon = range;
extern const QD8QuantizeFn qd8_convert_quantize__neon = quantize;
extern const QD8DequantizeFn qd8_convert_dequantize__neon = dequantize;

}  // namespace lrk
