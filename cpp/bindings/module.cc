// Python bindings: argument checking and conversion, then the C++ core with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "lrkernels/dispatch.h"
#include "lrkernels/gemm.h"
#include "lrkernels/layers.h"

namespace py = pybind11;
using lrk::Isa;

#include "lrk_build_info.h"

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

// A C-contiguous, aligned float32 array with the values of `a` (`a` itself when it already is one).
// array_t::ensure alone does not ask for alignment, and unaligned float loads fault on ARMv7.
FloatArray float32_c_aligned(const py::array& a) {
  auto& api = py::detail::npy_api::get();
  PyObject* r = api.PyArray_FromAny_(
      a.ptr(), py::dtype::of<float>().release().ptr(), 0, 0,
      py::detail::npy_api::NPY_ARRAY_ENSUREARRAY_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_ |
          py::array::c_style | py::array::forcecast,
      nullptr);
  if (r == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<FloatArray>(r);
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// np.asarray(obj), requiring a real floating-point dtype (float16/32/64/longdouble).
py::array as_real_float_array(py::handle obj, const char* what) {
  py::array arr = py::array::ensure(obj);
  if (!arr) throw py::type_error(std::string(what) + " must be array-like");
  if (arr.dtype().kind() != 'f') {
    throw py::type_error(std::string(what) + " must have a real floating-point dtype, got " +
                         dtype_str(arr) + " with shape " + shape_str(arr));
  }
  return arr;
}

FloatArray weight_matrix(py::handle obj, const char* what) {
  py::array arr = as_real_float_array(obj, what);
  if (arr.ndim() != 2) {
    throw py::value_error(std::string(what) + " must be 2-D, got shape " + shape_str(arr));
  }
  if (arr.shape(0) == 0 || arr.shape(1) == 0) {
    throw py::value_error(std::string(what) + " must not be empty, got shape " + shape_str(arr));
  }
  return float32_c_aligned(arr);
}

// The bias as float32 (callers handle None: an empty array_t is a real zero-length array, not null).
FloatArray bias_vector(py::handle obj, py::ssize_t out_features, const std::string& weight_desc) {
  py::array arr = as_real_float_array(obj, "bias");
  if (arr.ndim() != 1 || arr.shape(0) != out_features) {
    throw py::value_error("bias must have shape (" + std::to_string(out_features) + ",) to match " +
                          weight_desc + ", got shape " + shape_str(arr));
  }
  return float32_c_aligned(arr);
}

// A read-only float32 view of memory owned by `owner` (a layer), kept alive by the view.
py::array readonly_view(py::handle owner, const float* data, std::vector<py::ssize_t> shape) {
  py::array view(py::dtype::of<float>(), shape, data, owner);
  view.attr("setflags")(py::arg("write") = false);
  return view;
}

// x of shape (in,) or (batch, in), any real float dtype and strides, for a layer's forward().
struct LayerInput {
  py::array keep_alive;
  const float* data = nullptr;
  std::size_t batch = 0;
  std::size_t ldx = 0;
  bool one_d = false;
};

LayerInput layer_input(py::handle obj, std::size_t in_features, const char* layer) {
  py::array x = as_real_float_array(obj, "x");
  const auto in = static_cast<py::ssize_t>(in_features);
  if (x.ndim() != 1 && x.ndim() != 2) {
    throw py::value_error(std::string(layer) + " expects x of shape (in_features,) or (batch, in_features) = (" +
                          std::to_string(in) + ",) or (batch, " + std::to_string(in) +
                          "), got shape " + shape_str(x));
  }
  if (x.shape(x.ndim() - 1) != in) {
    throw py::value_error(std::string(layer) + " has in_features=" + std::to_string(in) +
                          ", but x has shape " + shape_str(x));
  }
  LayerInput r;
  r.one_d = x.ndim() == 1;
  r.batch = r.one_d ? 1 : static_cast<std::size_t>(x.shape(0));
  // float32 rows with unit inner stride are used in place whatever the row stride; anything else
  // (other dtypes, byte-swapped, column strides, negative strides) is converted once.
  const bool f32 = x.dtype().equal(py::dtype::of<float>());
  const py::ssize_t inner = x.strides(x.ndim() - 1);
  const py::ssize_t outer = r.one_d ? 0 : x.strides(0);
  const bool aligned = reinterpret_cast<std::uintptr_t>(x.data()) % alignof(float) == 0;
  if (f32 && aligned && (inner == sizeof(float) || in == 1) && outer >= 0 &&
      outer % static_cast<py::ssize_t>(sizeof(float)) == 0 &&
      (r.batch <= 1 || outer >= in * static_cast<py::ssize_t>(sizeof(float)))) {
    r.keep_alive = x;
    r.data = static_cast<const float*>(x.data());
    r.ldx = r.batch <= 1 ? in_features : static_cast<std::size_t>(outer) / sizeof(float);
  } else {
    FloatArray c = float32_c_aligned(x);
    r.data = c.data();
    r.ldx = in_features;
    r.keep_alive = c;
  }
  return r;
}

template <class Layer>
py::array_t<float> run_layer(const Layer& layer, py::handle x_obj, const char* name) {
  LayerInput in = layer_input(x_obj, layer.in_features(), name);
  const std::size_t out = layer.out_features();
  py::array_t<float> y = in.one_d ? py::array_t<float>({static_cast<py::ssize_t>(out)})
                                  : py::array_t<float>({static_cast<py::ssize_t>(in.batch),
                                                        static_cast<py::ssize_t>(out)});
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    layer.forward(in.batch, in.data, in.ldx, yp, out);
  }
  return y;
}

Isa isa_or_raise(const std::string& name) {
  Isa isa;
  if (!lrk::isa_from_name(name.c_str(), &isa)) {
    throw py::value_error("unknown ISA '" + name + "'; expected one of 'scalar', 'neon', 'avx2', 'avx512'");
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

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "lrkernels C++ core (use the lrkernels package, not this module)";

  py::class_<lrk::LowRankLinearLayer>(m, "LowRankLinear", R"doc(
Low-rank linear layer y = U (V x) + bias, run as one fused operation.

Parameters
----------
U : array_like, shape (out_features, rank)
V : array_like, shape (rank, in_features)
bias : array_like, shape (out_features,), optional

The weights are converted to float32 and packed once, here, for the active ISA.
Calling the layer with x of shape (in_features,) or (batch, in_features), of any real float
dtype and any strides, returns a new float32 array of shape (out_features,) or
(batch, out_features).
)doc")
      .def(py::init([](py::handle u_obj, py::handle v_obj, py::handle bias_obj) {
             FloatArray u = weight_matrix(u_obj, "U");
             FloatArray v = weight_matrix(v_obj, "V");
             if (u.shape(1) != v.shape(0)) {
               throw py::value_error("rank mismatch: U has shape " + shape_str(u) +
                                     " (out_features, rank) but V has shape " + shape_str(v) +
                                     " (rank, in_features)");
             }
             FloatArray b;
             if (!bias_obj.is_none()) b = bias_vector(bias_obj, u.shape(0), "U of shape " + shape_str(u));
             return new lrk::LowRankLinearLayer(u.data(), u.shape(0), u.shape(1), v.data(),
                                                v.shape(1), bias_obj.is_none() ? nullptr : b.data());
           }),
           py::arg("U"), py::arg("V"), py::arg("bias") = py::none())
      .def(
          "__call__",
          [](const lrk::LowRankLinearLayer& self, py::handle x) {
            return run_layer(self, x, "LowRankLinear");
          },
          py::arg("x"), "Apply the layer to x of shape (in_features,) or (batch, in_features).")
      .def_property_readonly("in_features", &lrk::LowRankLinearLayer::in_features)
      .def_property_readonly("out_features", &lrk::LowRankLinearLayer::out_features)
      .def_property_readonly("rank", &lrk::LowRankLinearLayer::rank)
      .def_property_readonly(
          "U",
          [](py::object self) {
            const auto& l = self.cast<const lrk::LowRankLinearLayer&>();
            return readonly_view(self, l.u().weights(), {(py::ssize_t)l.out_features(), (py::ssize_t)l.rank()});
          },
          "U (out_features, rank), read-only float32.")
      .def_property_readonly(
          "V",
          [](py::object self) {
            const auto& l = self.cast<const lrk::LowRankLinearLayer&>();
            return readonly_view(self, l.v().weights(), {(py::ssize_t)l.rank(), (py::ssize_t)l.in_features()});
          },
          "V (rank, in_features), read-only float32.")
      .def_property_readonly(
          "bias",
          [](py::object self) -> py::object {
            const auto& l = self.cast<const lrk::LowRankLinearLayer&>();
            if (l.u().bias() == nullptr) return py::none();
            return readonly_view(self, l.u().bias(), {(py::ssize_t)l.out_features()});
          },
          "bias (out_features,), read-only float32, or None.")
      .def("__repr__", [](const lrk::LowRankLinearLayer& l) {
        return "LowRankLinear(in_features=" + std::to_string(l.in_features()) +
               ", out_features=" + std::to_string(l.out_features()) +
               ", rank=" + std::to_string(l.rank()) +
               ", bias=" + (l.u().bias() ? "True" : "False") + ")";
      });

  py::class_<lrk::LinearLayer>(m, "Linear", R"doc(
Dense linear layer y = W x + bias on the same kernels as LowRankLinear (the baseline).

Parameters
----------
W : array_like, shape (out_features, in_features)
bias : array_like, shape (out_features,), optional
)doc")
      .def(py::init([](py::handle w_obj, py::handle bias_obj) {
             FloatArray w = weight_matrix(w_obj, "W");
             FloatArray b;
             if (!bias_obj.is_none()) b = bias_vector(bias_obj, w.shape(0), "W of shape " + shape_str(w));
             return new lrk::LinearLayer(w.data(), w.shape(0), w.shape(1),
                                         bias_obj.is_none() ? nullptr : b.data());
           }),
           py::arg("W"), py::arg("bias") = py::none())
      .def(
          "__call__",
          [](const lrk::LinearLayer& self, py::handle x) { return run_layer(self, x, "Linear"); },
          py::arg("x"), "Apply the layer to x of shape (in_features,) or (batch, in_features).")
      .def_property_readonly("in_features", &lrk::LinearLayer::in_features)
      .def_property_readonly("out_features", &lrk::LinearLayer::out_features)
      .def_property_readonly(
          "W",
          [](py::object self) {
            const auto& l = self.cast<const lrk::LinearLayer&>();
            return readonly_view(self, l.weight().weights(), {(py::ssize_t)l.out_features(), (py::ssize_t)l.in_features()});
          },
          "W (out_features, in_features), read-only float32.")
      .def_property_readonly(
          "bias",
          [](py::object self) -> py::object {
            const auto& l = self.cast<const lrk::LinearLayer&>();
            if (l.weight().bias() == nullptr) return py::none();
            return readonly_view(self, l.weight().bias(), {(py::ssize_t)l.out_features()});
          },
          "bias (out_features,), read-only float32, or None.")
      .def("__repr__", [](const lrk::LinearLayer& l) {
        return "Linear(in_features=" + std::to_string(l.in_features()) +
               ", out_features=" + std::to_string(l.out_features()) +
               ", bias=" + (l.weight().bias() ? "True" : "False") + ")";
      });

  m.def("available_isas", [] { return isa_names(lrk::available_isa_mask()); },
        "ISAs this build has AND this CPU supports, slowest first.");
  m.def("compiled_isas", [] { return isa_names(lrk::compiled_isa_mask()); },
        "ISAs compiled into this build.");
  m.def("cpu_isas", [] { return isa_names(lrk::cpu_isa_mask()); },
        "ISAs this CPU supports (whether or not this build has them).");
  m.def("get_isa", [] { return std::string(lrk::isa_name(lrk::active_isa())); },
        "The ISA new layer calls will use.");
  m.def(
      "set_isa",
      [](const std::string& name) {
        const Isa isa = isa_or_raise(name);
        if (!(lrk::available_isa_mask() & (1u << static_cast<int>(isa)))) {
          throw py::value_error("ISA '" + name + "' is not available here; available: " +
                                py::str(py::cast(isa_names(lrk::available_isa_mask()))).cast<std::string>());
        }
        lrk::set_active_isa(isa);
      },
      py::arg("name"), "Use ISA `name` for all following layer calls (ValueError if unavailable).");
  m.def("last_used_isa", []() -> py::object {
        const int i = lrk::last_used_isa();
        if (i < 0) return py::none();
        return py::str(lrk::isa_name(static_cast<Isa>(i)));
      },
      "ISA of the last layer call on this thread (None before any call).");
  m.def("kernel_names", [] {
        py::dict d;
        for (int i = 0; i < lrk::kNumIsas; ++i) {
          const Isa isa = static_cast<Isa>(i);
          if (lrk::available_isa_mask() & (1u << i)) {
            const auto& ks = lrk::gemm_kernels_for(isa);
            d[py::str(lrk::isa_name(isa))] = py::str(ks.name);
          }
        }
        return d;
      });
  m.def("kernel_tile", [](const std::string& name) {
        const auto& ks = lrk::gemm_kernels_for(isa_or_raise(name));
        return py::make_tuple(ks.mr, ks.nr, ks.kc);
      },
      py::arg("isa"), "(mr, nr, kc) of the GEMM micro-kernel of an available ISA.");
  m.def(
      "measure_peak_gflops",
      [](const std::string& name, double seconds) -> py::object {
        const auto& ks = lrk::gemm_kernels_for(isa_or_raise(name));
        if (ks.fma_probe == nullptr) return py::none();
        alignas(64) float sink[16];
        py::gil_scoped_release nogil;
        std::size_t iters = 1 << 14;
        double best = 0.0;
        const auto stop = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
        while (std::chrono::steady_clock::now() < stop) {
          const auto t0 = std::chrono::steady_clock::now();
          ks.fma_probe(iters, sink);
          const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          if (dt < 1e-3) { iters *= 2; continue; }
          best = std::max(best, iters * static_cast<double>(ks.probe_flops_per_iteration) / dt / 1e9);
        }
        py::gil_scoped_acquire gil;
        return py::float_(best);
      },
      py::arg("isa"), py::arg("seconds") = 0.2,
      "Single-core f32 FMA peak of an ISA in GFLOP/s, measured with register-only FMAs (None for scalar).");
  m.def("cpu_name", &lrk::cpu_description);
  m.def("compiler", &compiler_string);
  m.attr("build_flags") = LRK_BUILD_FLAGS;
  m.attr("__version__") = LRK_VERSION;

  m.def("_set_blocking",
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
  m.def("_scratch_allocations", &lrk::scratch_allocation_count,
        "Testing hook: times a per-thread scratch buffer had to grow.");
}
