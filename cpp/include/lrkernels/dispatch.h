// Run-time choice of the kernels: an ISA compiled into this build AND supported by this CPU.
#pragma once

#include <string>

#include "lrkernels/isa.h"
#include "lrkernels/kernel_config.h"

namespace lrk {

// Bit i set <=> Isa(i) is present.
unsigned compiled_isa_mask();
unsigned cpu_isa_mask();  // what the CPU (and OS register state) supports
unsigned available_isa_mask();

Isa best_available_isa();
Isa active_isa();
// Throws std::invalid_argument when `isa` is not available.
void set_active_isa(Isa isa);
// The kernel families of the active ISA (what a layer call uses).
const KernelSet& active_kernel_set();
// The kernel families of an available ISA; throws std::invalid_argument otherwise.
const KernelSet& kernel_set_for(Isa isa);

// The ISA of the last layer call made on this thread (for tests: proof that a path really ran).
// Returns -1 when no layer has run on this thread yet.
int last_used_isa();
void record_used_isa(Isa isa);

std::string cpu_description();

}  // namespace lrk
