// The depthwise tap loop (dwconv-generic.h) vectorized by the compiler with the avx2 flags.
#include <immintrin.h>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "dwconv-generic.h"
}  // namespace

extern const F32DwconvFn f32_dwconv_taps__avx2 = depthwise_taps;

}  // namespace lrk
