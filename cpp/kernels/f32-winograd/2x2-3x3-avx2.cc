// Winograd F(2x2, 3x3) transforms (winograd-generic.h) in vector types lowered with the avx2
// flags.
#include <cstddef>
#include <cstring>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
constexpr std::size_t kBlock = 8;  // channels per block: one ymm
#include "winograd-generic.h"
}  // namespace

extern const F32WinogradInputFn f32_winograd_input_2x2_3x3__avx2 = winograd_input;
extern const F32WinogradOutputFn f32_winograd_output_2x2_3x3__avx2 = winograd_output;

}  // namespace lrk
