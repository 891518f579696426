// ISA vocabulary shared by the C++ core, the build and the Python API.
#pragma once

namespace lrk {

// The order is the order of preference within an architecture: higher is faster.
enum class Isa : int { scalar = 0, neon = 1, avx2 = 2, avx512 = 3 };
constexpr int kNumIsas = 4;

const char* isa_name(Isa isa);
// Returns false for a name that is not one of "scalar", "neon", "avx2", "avx512".
bool isa_from_name(const char* name, Isa* out);

}  // namespace lrk
