// Python bindings: the module's functions (kernel selection, threads, probes, test hooks) and the
// layer classes (layer_bindings.cc, generated from the table of layer kinds).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "arrays.h"
#include "lrkernels/dispatch.h"
#include "lrkernels/gemm.h"
#include "lrkernels/layer.h"
#include "lrkernels/probes.h"
#include "lrkernels/threadpool.h"

namespace py = pybind11;
using lrk::Isa;

#include "lrk_build_info.h"

namespace {

Isa isa_or_raise(const std::string& name) {
  Isa isa;
  if (!lrk::isa_from_name(name.c_str(), &isa)) {
    throw py::value_error("unknown ISA '" + name +
                          "'; expected one of 'scalar', 'neon', 'avx2', 'avx512'");
  }
  return isa;
}

std::vector<std::string> isa_names(unsigned mask) {
  std::vector<std::string> names;
  for (int i = 0; i < lrk::kNumIsas; ++i) {
    if (mask & (1u << i)) names.emplace_back(lrk::isa_name(static_cast<Isa>(i)));
  }
  return names;
}

std::string compiler_string() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

// {ISA name: what(its kernel set)} for every available ISA.
template <class What>
py::dict per_available_isa(What what) {
  py::dict d;
  for (int i = 0; i < lrk::kNumIsas; ++i) {
    if (!(lrk::available_isa_mask() & (1u << i))) continue;
    const Isa isa = static_cast<Isa>(i);
    d[py::str(lrk::isa_name(isa))] = what(lrk::kernel_set_for(isa));
  }
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "lrkernels C++ core (use the lrkernels package, not this module)";
  lrk_py::bind_layers(m);
  lrk_py::bind_recurrent(m);

  m.def(
      "available_isas", [] { return isa_names(lrk::available_isa_mask()); },
      "ISAs this build has AND this CPU supports, slowest first.");
  m.def(
      "compiled_isas", [] { return isa_names(lrk::compiled_isa_mask()); },
      "ISAs compiled into this build.");
  m.def(
      "cpu_isas", [] { return isa_names(lrk::cpu_isa_mask()); },
      "ISAs this CPU supports (whether or not this build has them).");
  m.def(
      "get_isa", [] { return std::string(lrk::isa_name(lrk::active_isa())); },
      "The ISA new layer calls will use.");
  m.def(
      "set_isa",
      [](const std::string& name) {
        const Isa isa = isa_or_raise(name);
        if (!(lrk::available_isa_mask() & (1u << static_cast<int>(isa)))) {
          throw py::value_error(
              "ISA '" + name + "' is not available here; available: " +
              py::str(py::cast(isa_names(lrk::available_isa_mask()))).cast<std::string>());
        }
        lrk::set_active_isa(isa);
      },
      py::arg("name"), "Use ISA `name` for all following layer calls (ValueError if unavailable).");
  m.def(
      "last_used_isa",
      []() -> py::object {
        const int i = lrk::last_used_isa();
        if (i < 0) return py::none();
        return py::str(lrk::isa_name(static_cast<Isa>(i)));
      },
      "ISA of the last layer call on this thread (None before any call).");
  m.def(
      "kernel_names",
      [] {
        return per_available_isa(
            [](const lrk::KernelSet& ks) { return py::str(ks.f32_gemm->name); });
      },
      "The f32 GEMM micro-kernel of each available ISA.");
  m.def(
      "precision_kernels",
      [] {
        return per_available_isa([](const lrk::KernelSet& ks) {
          py::dict d;
          d["fp32"] = ks.f32_gemm->name;
          d["fp16"] = lrk::gemm_config_for(ks, lrk::Precision::fp16).name;
          d["int8"] = lrk::qd8_config_for(ks).name;
          return d;
        });
      },
      "The GEMM family each precision uses on each available ISA, as chosen now (CPU features "
      "less the disabled ones).");
  m.def(
      "all_precision_kernels",
      [] {
        return per_available_isa([](const lrk::KernelSet& ks) {
          py::dict d;
          py::list f16, q8;
          for (const auto* c : lrk::f16w_gemm_configs(ks.isa)) f16.append(c->name);
          for (const auto* c : lrk::qd8_gemm_configs(ks.isa)) q8.append(c->name);
          d["fp16"] = f16;
          d["int8"] = q8;
          return d;
        });
      },
      "Every fp16 and int8 GEMM row each available ISA has on this CPU, preferred first.");
  m.def(
      "last_used_kernel", [] { return std::string(lrk::last_used_kernel()); },
      "The GEMM family config of the last layer call on this thread ('' before any call).");
  m.def(
      "cpu_features",
      [] {
        py::list names;
        const unsigned mask = lrk::cpu_feature_mask();
        for (unsigned bit = 1; bit != 0; bit <<= 1) {
          if (mask & bit) names.append(lrk::cpu_feature_name(bit));
        }
        return names;
      },
      "CPU features this machine has (names as in /proc/cpuinfo).");
  m.def(
      "disabled_cpu_features",
      [] {
        py::list names;
        const unsigned mask = lrk::disabled_cpu_features();
        for (unsigned bit = 1; bit != 0; bit <<= 1) {
          if (mask & bit) names.append(lrk::cpu_feature_name(bit));
        }
        return names;
      },
      "The sub-ISA features kernel selection ignores (set_disabled_cpu_features).");
  m.def(
      "set_disabled_cpu_features",
      [](const std::vector<std::string>& names) {
        unsigned mask = 0;
        for (const std::string& n : names) {
          const unsigned bit = lrk::cpu_feature_from_name(n.c_str());
          if (bit == 0 || !(bit & lrk::kCpuOverridableFeatures)) {
            std::string known;
            for (unsigned b = 1; b != 0; b <<= 1) {
              if (b & lrk::kCpuOverridableFeatures) {
                known += std::string(known.empty() ? "" : ", ") + lrk::cpu_feature_name(b);
              }
            }
            throw py::value_error("cannot disable CPU feature '" + n + "'; the features are " +
                                  known + " (the ISA itself is set_isa's)");
          }
          mask |= bit;
        }
        lrk::set_disabled_cpu_features(mask);
      },
      py::arg("names"),
      "Makes kernel selection ignore these sub-ISA features (e.g. ['asimddp'], ['avx512_vnni'])"
      ": the fallback kernels run; [] restores the CPU's own features.");
  m.def(
      "kernel_families",
      [] {
        return per_available_isa([](const lrk::KernelSet& ks) {
          py::list names;
          names.append(ks.f32_gemm->name);
          if (ks.f32_gemm->narrow) names.append(ks.f32_gemm->narrow->name);
          names.append(ks.f32_transpose->name);
          names.append(ks.f32_dwconv->name);
          names.append(ks.f32_clamp->name);
          names.append(ks.f32_rnn->name);
          if (ks.fma_probe) names.append(ks.fma_probe->name);
          return names;
        });
      },
      "Every kernel family config of each available ISA, by name.");
  m.def(
      "kernel_tile",
      [](const std::string& name) {
        const auto& ks = *lrk::kernel_set_for(isa_or_raise(name)).f32_gemm;
        return py::make_tuple(ks.mr, ks.nr, ks.kc);
      },
      py::arg("isa"), "(mr, nr, kc) of the GEMM micro-kernel of an available ISA.");
  m.def(
      "measure_peak_gflops",
      [](const std::string& name, double seconds) -> py::object {
        const lrk::FmaProbeConfig* probe = lrk::kernel_set_for(isa_or_raise(name)).fma_probe;
        if (probe == nullptr) return py::none();
        alignas(64) float sink[16];
        std::size_t iters = 1 << 14;
        double best = 0.0;
        lrk_py::without_gil([&] {
          const auto stop =
              std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
          while (std::chrono::steady_clock::now() < stop) {
            const auto t0 = std::chrono::steady_clock::now();
            probe->probe(iters, sink);
            const double dt =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (dt < 1e-3) {
              iters *= 2;
              continue;
            }
            best =
                std::max(best, iters * static_cast<double>(probe->flops_per_iteration) / dt / 1e9);
          }
        });
        return py::float_(best);
      },
      py::arg("isa"), py::arg("seconds") = 0.2,
      "Single-core f32 FMA peak of an ISA in GFLOP/s, measured with register-only FMAs (None for "
      "scalar).");
  m.def(
      "set_num_threads",
      [](py::handle n_obj) {
        py::object index = py::isinstance<py::bool_>(n_obj)
                               ? py::object()
                               : py::reinterpret_steal<py::object>(PyNumber_Index(n_obj.ptr()));
        if (!index) {
          PyErr_Clear();
          throw py::type_error("set_num_threads expects an int, got " +
                               py::repr(n_obj).cast<std::string>());
        }
        int overflow = 0;
        const long long n = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
        if (overflow < 0 || (overflow == 0 && n < 1)) {
          throw py::value_error("set_num_threads expects n >= 1, got " +
                                py::repr(n_obj).cast<std::string>());
        }
        if (overflow > 0 || static_cast<unsigned long long>(n) > lrk::max_num_threads()) {
          throw py::value_error(
              "set_num_threads expects n <= " + std::to_string(lrk::max_num_threads()) +
              " (4 threads per CPU of this machine, at least 16), got " +
              py::repr(n_obj).cast<std::string>());
        }
        lrk::set_num_threads(static_cast<std::size_t>(n));
      },
      py::arg("n"), "Threads a layer call may use (>= 1). Results do not depend on it.");
  m.def("get_num_threads", &lrk::num_threads, "Threads a layer call may use.");
  m.def("max_num_threads", &lrk::max_num_threads,
        "The most threads set_num_threads accepts (4 per CPU of this machine, at least 16).");
  m.def("default_num_threads", &lrk::default_num_threads,
        "The CPUs this process may run on (sched affinity): the default thread count.");
  m.def(
      "measure_read_bandwidth",
      [](std::size_t bytes, double seconds, std::size_t threads) {
        double gbps = 0.0;
        lrk_py::without_gil([&] { gbps = lrk::measure_read_bandwidth(bytes, seconds, threads); });
        return gbps;
      },
      py::arg("bytes") = std::size_t(256) << 20, py::arg("seconds") = 0.3, py::arg("threads") = 1,
      "Streaming-read bandwidth in GB/s (best of repeated passes over a `bytes` buffer).");
  m.def("cpu_name", &lrk::cpu_description);
  m.def("compiler", &compiler_string);
  m.attr("build_flags") = LRK_BUILD_FLAGS;
  m.attr("__version__") = LRK_VERSION;

  m.def(
      "_set_blocking",
      [](std::size_t kc, std::size_t nc, std::size_t mc, std::size_t mb) {
        lrk::Blocking b;
        b.kc = kc;
        b.nc = nc;
        b.mc = mc;
        b.mb = mb;
        lrk::set_blocking_override(b);
      },
      py::arg("kc") = 0, py::arg("nc") = 0, py::arg("mc") = 0, py::arg("mb") = 0,
      "Testing hook: shrink the cache blocks (0 = default) so small shapes cross block edges.");
  m.def(
      "_scratch_held", [] { return lrk::thread_scratch_held(); },
      "Testing hook: bytes of scratch the calling thread holds between calls.");
  m.def("_scratch_allocations", &lrk::scratch_allocation_count,
        "Testing hook: times a per-thread scratch buffer had to grow.");
}
