// The depthwise tap loop (dwconv-generic.h) vectorized by the compiler with the scalar flags.
#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#include "dwconv-generic.h"
}  // namespace

extern const F32DwconvFn f32_dwconv_taps__scalar = depthwise_taps;

}  // namespace lrk
