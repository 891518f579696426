// Winograd F(2x2, 3x3) transforms (winograd-generic.h) in vector types lowered with the scalar
// flags.
#include <cstddef>
#include <cstring>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
constexpr std::size_t kBlock = 4;  // channels per block: no SIMD assumed: small blocks
#include "winograd-generic.h"
}  // namespace

extern const F32WinogradInputFn f32_winograd_input_2x2_3x3__scalar = winograd_input;
extern const F32WinogradOutputFn f32_winograd_output_2x2_3x3__scalar = winograd_output;

}  // namespace lrk
