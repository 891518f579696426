// AVX2 build of the 8 x 8 ymm transpose (transpose-avx.h).
#include <immintrin.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "transpose-avx.h"
}  // namespace

extern const F32TransposeFn f32_transpose_8x8__avx2 = transpose;

}  // namespace lrk
