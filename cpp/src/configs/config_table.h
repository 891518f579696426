// The per-ISA rows of one kernel family, filled once. A row is returned only when this CPU has the
// features it requires (a build may have rows its host cannot run).
#pragma once

#include <array>
#include <cstddef>
#include <vector>

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

// A family with several rows per ISA in order of preference, told apart by sub-ISA features (the
// int8 GEMM on an AVX-512 CPU: VNNI, else AVX-VNNI, else plain AVX2). Rows may use kernels of a
// lower ISA of the same architecture (an AVX-512 CPU runs AVX2 code).
template <class Config, std::size_t MaxRows = 4>
class CandidateTable {
 public:
  // A new row of `isa`, preferred after the rows added before it.
  Config& add(Isa isa) {
    const int i = static_cast<int>(isa);
    if (count_[i] == MaxRows) throw "CandidateTable: too many rows";  // a bug in a fill()
    Config& c = rows_[i][count_[i]++];
    c.isa = isa;
    return c;
  }
  // The first row whose features this CPU has and the caller has not disabled.
  const Config* best(Isa isa) const {
    const unsigned have = enabled_cpu_features();
    const int i = static_cast<int>(isa);
    if (i < 0 || i >= kNumIsas) return nullptr;
    for (std::size_t r = 0; r < count_[i]; ++r) {
      if ((have & rows_[i][r].required_features) == rows_[i][r].required_features) {
        return &rows_[i][r];
      }
    }
    return nullptr;
  }
  // Every row this CPU can run (disabled features or not), preferred first.
  std::vector<const Config*> all(Isa isa) const {
    std::vector<const Config*> out;
    const int i = static_cast<int>(isa);
    if (i < 0 || i >= kNumIsas) return out;
    for (std::size_t r = 0; r < count_[i]; ++r) {
      const unsigned need = rows_[i][r].required_features;
      if ((cpu_feature_mask() & need) == need) out.push_back(&rows_[i][r]);
    }
    return out;
  }

 private:
  std::array<std::array<Config, MaxRows>, kNumIsas> rows_{};
  std::array<std::size_t, kNumIsas> count_{};
};

// The table of a family, built by fill() on first use and kept for the life of the process (never
// copied, so rows may point at each other).
template <class Config, class Fill>
const ConfigTable<Config>& build_table(Fill fill) {
  auto* table = new ConfigTable<Config>();
  fill(*table);
  return *table;
}
template <class Config, class Fill>
const CandidateTable<Config>& build_candidate_table(Fill fill) {
  auto* table = new CandidateTable<Config>();
  fill(*table);
  return *table;
}

}  // namespace lrk
