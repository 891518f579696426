// Winograd F(2x2, 3x3) transforms (winograd-generic.h) on NEON: GCC vector types on aarch64,
// intrinsics on armv7.
#include <arm_neon.h>

#include <cstddef>
#include <cstring>

#include "lrkernels/microkernels.h"

namespace lrk {
namespace {
#if defined(__arm__)
// armv7: a q register through intrinsics (see winograd-generic.h). The library runs with
// subnormals flushed (fp_mode.h), as NEON computes, so this matches the other ISAs.
struct Block {
  float32x4_t q;
};
inline Block operator+(Block a, Block b) { return {vaddq_f32(a.q, b.q)}; }
inline Block operator-(Block a, Block b) { return {vsubq_f32(a.q, b.q)}; }
#define LRK_WINOGRAD_HAS_BLOCK
#endif
constexpr std::size_t kBlock = 4;  // channels per block: one q register
#include "winograd-generic.h"
}  // namespace

extern const F32WinogradInputFn f32_winograd_input_2x2_3x3__neon = winograd_input;
extern const F32WinogradOutputFn f32_winograd_output_2x2_3x3__neon = winograd_output;

}  // namespace lrk
