// The per-ISA rows of one kernel family, filled once. A row is returned only when this CPU has the
// features it requires (a build may have rows its host cannot run).
#pragma once

#include <array>

#include "lrkernels/kernel_config.h"

namespace lrk {

template <class Config>
class ConfigTable {
 public:
  // The row of `isa`, to be filled field by field; its isa is set.
  Config& add(Isa isa) {
    Config& c = rows_[static_cast<int>(isa)];
    c.isa = isa;
    present_[static_cast<int>(isa)] = true;
    return c;
  }
  // Storage for a variant a row points at (e.g. a narrow GEMM tile); not returned by get().
  Config& variant(Isa isa) {
    Config& c = variants_[static_cast<int>(isa)];
    c.isa = isa;
    return c;
  }
  const Config* get(Isa isa) const {
    const int i = static_cast<int>(isa);
    if (i < 0 || i >= kNumIsas || !present_[i]) return nullptr;
    const Config& c = rows_[i];
    return (cpu_feature_mask() & c.required_features) == c.required_features ? &c : nullptr;
  }

 private:
  std::array<Config, kNumIsas> rows_{};
  std::array<Config, kNumIsas> variants_{};
  std::array<bool, kNumIsas> present_{};
};

// The table of a family, built by fill() on first use and kept for the life of the process (never
// copied, so rows may point at each other).
template <class Config, class Fill>
const ConfigTable<Config>& build_table(Fill fill) {
  auto* table = new ConfigTable<Config>();
  fill(*table);
  return *table;
}

}  // namespace lrk
