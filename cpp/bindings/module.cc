// Python bindings: argument checking and conversion, then the C++ core with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <tuple>
#include <utility>
#include <sstream>
#include <string>
#include <vector>

#include "lrkernels/conv.h"
#include "lrkernels/dispatch.h"
#include "lrkernels/gemm.h"
#include "lrkernels/layers.h"
#include "lrkernels/probes.h"
#include "lrkernels/threadpool.h"

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

// Rejects an output whose element count or byte size would overflow, before anything is allocated
// (a size that fits but exceeds memory raises MemoryError from the allocation itself).
void check_output_size(const std::vector<py::ssize_t>& shape, const char* layer) {
  std::size_t count = 1;
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  text += ")";
  for (py::ssize_t d : shape) {
    if (__builtin_mul_overflow(count, static_cast<std::size_t>(d), &count) ||
        count > static_cast<std::size_t>(PTRDIFF_MAX) / sizeof(float)) {
      throw py::value_error(std::string(layer) + ": output of shape " + text + " is too large");
    }
  }
}

template <class Layer>
py::array_t<float> run_layer(const Layer& layer, py::handle x_obj, const char* name) {
  LayerInput in = layer_input(x_obj, layer.in_features(), name);
  const std::size_t out = layer.out_features();
  check_output_size({static_cast<py::ssize_t>(in.batch), static_cast<py::ssize_t>(out)}, name);
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

// ---- convolutions ---------------------------------------------------------------------------------

std::string pair_str(std::size_t a, std::size_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// An int or a pair of ints, each >= minimum: stride/dilation (minimum 1) and padding (minimum 0).
std::pair<std::size_t, std::size_t> int_pair(py::handle obj, const char* what, long minimum) {
  auto one = [&](py::handle v) -> long long {
    // operator.index semantics: ints and numpy integers, never floats (int(1.5) would truncate).
    py::object index = py::isinstance<py::bool_>(v) ? py::object()
                                                    : py::reinterpret_steal<py::object>(PyNumber_Index(v.ptr()));
    if (!index) {
      PyErr_Clear();
      throw py::type_error(std::string(what) + " must be an int or a pair of ints, got " +
                           py::repr(obj).cast<std::string>());
    }
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    if (overflow != 0 || x > (1LL << 24)) {
      throw py::value_error(std::string(what) + " must be <= " + std::to_string(1LL << 24) + ", got " +
                            py::repr(obj).cast<std::string>());
    }
    if (x < minimum) {
      throw py::value_error(std::string(what) + " must be >= " + std::to_string(minimum) + ", got " +
                            py::repr(obj).cast<std::string>());
    }
    return x;
  };
  if (py::isinstance<py::tuple>(obj) || py::isinstance<py::list>(obj)) {
    py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
    if (seq.size() != 2) {
      throw py::value_error(std::string(what) + " must be an int or a pair of ints, got " +
                            py::repr(obj).cast<std::string>());
    }
    return {static_cast<std::size_t>(one(seq[0])), static_cast<std::size_t>(one(seq[1]))};
  }
  const auto v = static_cast<std::size_t>(one(obj));
  return {v, v};
}

lrk::Layout parse_layout(py::handle obj) {
  if (py::isinstance<py::str>(obj)) {
    const std::string v = obj.cast<std::string>();
    if (v == "NCHW") return lrk::Layout::nchw;
    if (v == "NHWC") return lrk::Layout::nhwc;
  }
  throw py::value_error("layout must be \"NCHW\" or \"NHWC\", got " + py::repr(obj).cast<std::string>());
}

const char* layout_name(lrk::Layout l) { return l == lrk::Layout::nchw ? "NCHW" : "NHWC"; }

lrk::ConvGeometry conv_geometry(std::size_t kh, std::size_t kw, py::handle stride,
                                py::handle padding, py::handle dilation) {
  lrk::ConvGeometry g;
  g.kh = kh;
  g.kw = kw;
  std::tie(g.sh, g.sw) = int_pair(stride, "stride", 1);
  std::tie(g.ph, g.pw) = int_pair(padding, "padding", 0);
  std::tie(g.dh, g.dw) = int_pair(dilation, "dilation", 1);
  return g;
}

FloatArray weight_tensor(py::handle obj, const char* what, int ndim, const char* dims) {
  py::array arr = as_real_float_array(obj, what);
  if (arr.ndim() != ndim) {
    throw py::value_error(std::string(what) + " must be " + std::to_string(ndim) + "-D " + dims +
                          ", got shape " + shape_str(arr));
  }
  for (py::ssize_t i = 0; i < arr.ndim(); ++i) {
    if (arr.shape(i) == 0) {
      throw py::value_error(std::string(what) + " must not be empty, got shape " + shape_str(arr));
    }
  }
  return float32_c_aligned(arr);
}

// Python-side state of a conv layer: the C++ layer plus what the binding needs to check inputs.
template <class Layer>
struct ConvLayerHandle {
  std::unique_ptr<Layer> layer;
  lrk::Layout layout;
};

template <class Layer>
py::array_t<float> run_conv(const ConvLayerHandle<Layer>& h, py::handle x_obj, const char* name) {
  const Layer& layer = *h.layer;
  py::array x = as_real_float_array(x_obj, "x");
  const bool nchw = h.layout == lrk::Layout::nchw;
  const std::string expected = nchw ? "(N, C, H, W)" : "(N, H, W, C)";
  if (x.ndim() != 4) {
    throw py::value_error(std::string(name) + " with layout " + layout_name(h.layout) +
                          " expects x of shape " + expected + ", got shape " + shape_str(x));
  }
  const auto n = static_cast<std::size_t>(x.shape(0));
  const auto c = static_cast<std::size_t>(x.shape(nchw ? 1 : 3));
  const auto hh = static_cast<std::size_t>(x.shape(nchw ? 2 : 1));
  const auto ww = static_cast<std::size_t>(x.shape(nchw ? 3 : 2));
  if (c != layer.in_channels()) {
    throw py::value_error(std::string(name) + " has in_channels=" + std::to_string(layer.in_channels()) +
                          ", but x of shape " + shape_str(x) + " has " + std::to_string(c) +
                          " channels (layout " + layout_name(h.layout) + ")");
  }
  const lrk::ConvGeometry& g = layer.geometry();
  const std::size_t ho = g.out_h(hh), wo = g.out_w(ww);
  if (ho == 0 || wo == 0) {
    throw py::value_error(std::string(name) + ": output size below 1 for x of shape " + shape_str(x) +
                          " with kernel " + pair_str(g.kh, g.kw) + ", stride " + pair_str(g.sh, g.sw) +
                          ", padding " + pair_str(g.ph, g.pw) + ", dilation " + pair_str(g.dh, g.dw));
  }
  FloatArray xc = float32_c_aligned(x);
  const auto co = static_cast<py::ssize_t>(layer.out_channels());
  std::vector<py::ssize_t> shape = nchw ? std::vector<py::ssize_t>{(py::ssize_t)n, co, (py::ssize_t)ho, (py::ssize_t)wo}
                                        : std::vector<py::ssize_t>{(py::ssize_t)n, (py::ssize_t)ho, (py::ssize_t)wo, co};
  check_output_size(shape, name);
  py::array_t<float> y(shape);
  lrk::ConvInput in;
  in.x = xc.data();
  in.n = n;
  in.c = c;
  in.h = hh;
  in.w = ww;
  in.layout = h.layout;
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    layer.forward(in, yp);
  }
  return y;
}

template <class Handle>
void def_conv_common(py::class_<Handle>& cls) {
  cls.def_property_readonly("in_channels", [](const Handle& h) { return h.layer->in_channels(); })
      .def_property_readonly("out_channels", [](const Handle& h) { return h.layer->out_channels(); })
      .def_property_readonly("kernel_size", [](const Handle& h) {
        return py::make_tuple(h.layer->geometry().kh, h.layer->geometry().kw);
      })
      .def_property_readonly("stride", [](const Handle& h) {
        return py::make_tuple(h.layer->geometry().sh, h.layer->geometry().sw);
      })
      .def_property_readonly("padding", [](const Handle& h) {
        return py::make_tuple(h.layer->geometry().ph, h.layer->geometry().pw);
      })
      .def_property_readonly("dilation", [](const Handle& h) {
        return py::make_tuple(h.layer->geometry().dh, h.layer->geometry().dw);
      })
      .def_property_readonly("layout", [](const Handle& h) { return std::string(layout_name(h.layout)); })
      .def_property_readonly("bias", [](py::object self) -> py::object {
        const auto& h = self.cast<const Handle&>();
        if (h.layer->bias() == nullptr) return py::none();
        return readonly_view(self, h.layer->bias(), {(py::ssize_t)h.layer->out_channels()});
      }, "bias (out_channels,), read-only float32, or None.");
}

using Conv2dHandle = ConvLayerHandle<lrk::Conv2dLayer>;
using TuckerHandle = ConvLayerHandle<lrk::TuckerConv2dLayer>;
using CPHandle = ConvLayerHandle<lrk::CPConv2dLayer>;

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

  py::class_<Conv2dHandle> conv(m, "Conv2d", R"doc(
Dense 2-D convolution (groups=1, cross-correlation as in PyTorch) on the lrkernels engine: the
baseline a factorized convolution is compared with, and the kernel that runs the Tucker core.

Parameters
----------
weight : array_like, shape (out_channels, in_channels, kh, kw)
bias : array_like, shape (out_channels,), optional
stride, padding, dilation : int or (int, int)
    Padding is symmetric per axis (rows top and bottom, columns left and right).
layout : "NCHW" or "NHWC"
    Layout of the input and of the returned output.

Calling the layer with x of shape (N, C, H, W) (or (N, H, W, C)), any real float dtype and strides,
returns a new float32 array (N, out_channels, Ho, Wo) (or (N, Ho, Wo, out_channels)).
)doc");
  conv.def(py::init([](py::handle w_obj, py::handle bias_obj, py::handle stride, py::handle padding,
                        py::handle dilation, py::handle layout) {
             const lrk::Layout l = parse_layout(layout);
             FloatArray w = weight_tensor(w_obj, "weight", 4, "(out_channels, in_channels, kh, kw)");
             FloatArray b;
             if (!bias_obj.is_none()) b = bias_vector(bias_obj, w.shape(0), "weight of shape " + shape_str(w));
             const lrk::ConvGeometry g = conv_geometry(w.shape(2), w.shape(3), stride, padding, dilation);
             auto layer = std::make_unique<lrk::Conv2dLayer>(w.data(), w.shape(0), w.shape(1),
                                                             bias_obj.is_none() ? nullptr : b.data(), g);
             return new Conv2dHandle{std::move(layer), l};
           }),
           py::arg("weight"), py::arg("bias") = py::none(), py::kw_only(), py::arg("stride") = 1,
           py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("layout") = "NCHW")
      .def("__call__", [](const Conv2dHandle& h, py::handle x) { return run_conv(h, x, "Conv2d"); },
           py::arg("x"), "Apply the convolution to x in the layer's layout.")
      .def_property_readonly("weight", [](py::object self) {
        const auto& h = self.cast<const Conv2dHandle&>();
        const auto& g = h.layer->geometry();
        return readonly_view(self, h.layer->weight(), {(py::ssize_t)h.layer->out_channels(),
                             (py::ssize_t)h.layer->in_channels(), (py::ssize_t)g.kh, (py::ssize_t)g.kw});
      }, "weight (out_channels, in_channels, kh, kw), read-only float32.")
      .def("__repr__", [](const Conv2dHandle& h) {
        const auto& g = h.layer->geometry();
        return "Conv2d(" + std::to_string(h.layer->in_channels()) + ", " +
               std::to_string(h.layer->out_channels()) + ", kernel_size=" + pair_str(g.kh, g.kw) +
               ", stride=" + pair_str(g.sh, g.sw) + ", padding=" + pair_str(g.ph, g.pw) +
               ", dilation=" + pair_str(g.dh, g.dw) + ", bias=" + (h.layer->bias() ? "True" : "False") +
               ", layout=\"" + layout_name(h.layout) + "\")";
      });
  def_conv_common(conv);

  py::class_<TuckerHandle> tucker(m, "TuckerConv2d", R"doc(
Tucker-2 factorized convolution run as one fused operation: a 1x1 convolution in_channels -> R_in,
a kh x kw "core" convolution R_in -> R_out with the layer's stride, padding and dilation, and a 1x1
convolution R_out -> out_channels carrying the bias. No full intermediate tensor is written.

Parameters
----------
first : array_like, shape (R_in, in_channels)
core : array_like, shape (R_out, R_in, kh, kw)
last : array_like, shape (out_channels, R_out)
bias : array_like, shape (out_channels,), optional
stride, padding, dilation : int or (int, int)
layout : "NCHW" or "NHWC"
)doc");
  tucker.def(py::init([](py::handle f_obj, py::handle c_obj, py::handle l_obj, py::handle bias_obj,
                          py::handle stride, py::handle padding, py::handle dilation, py::handle layout) {
               const lrk::Layout l = parse_layout(layout);
               FloatArray f = weight_tensor(f_obj, "first", 2, "(R_in, in_channels)");
               FloatArray c = weight_tensor(c_obj, "core", 4, "(R_out, R_in, kh, kw)");
               FloatArray la = weight_tensor(l_obj, "last", 2, "(out_channels, R_out)");
               if (c.shape(1) != f.shape(0) || la.shape(1) != c.shape(0)) {
                 throw py::value_error("rank mismatch: first " + shape_str(f) + " is (R_in, in_channels), core " +
                                       shape_str(c) + " must be (R_out, R_in, kh, kw), last " + shape_str(la) +
                                       " must be (out_channels, R_out)");
               }
               FloatArray b;
               if (!bias_obj.is_none()) b = bias_vector(bias_obj, la.shape(0), "last of shape " + shape_str(la));
               const lrk::ConvGeometry g = conv_geometry(c.shape(2), c.shape(3), stride, padding, dilation);
               auto layer = std::make_unique<lrk::TuckerConv2dLayer>(
                   f.data(), f.shape(0), f.shape(1), c.data(), c.shape(0), la.data(), la.shape(0),
                   bias_obj.is_none() ? nullptr : b.data(), g);
               return new TuckerHandle{std::move(layer), l};
             }),
             py::arg("first"), py::arg("core"), py::arg("last"), py::arg("bias") = py::none(), py::kw_only(),
             py::arg("stride") = 1, py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("layout") = "NCHW")
      .def("__call__", [](const TuckerHandle& h, py::handle x) { return run_conv(h, x, "TuckerConv2d"); },
           py::arg("x"), "Apply the fused convolution to x in the layer's layout.")
      .def_property_readonly("ranks", [](const TuckerHandle& h) {
        return py::make_tuple(h.layer->rank_in(), h.layer->rank_out());
      }, "(R_in, R_out)")
      .def_property_readonly("first", [](py::object self) {
        const auto& h = self.cast<const TuckerHandle&>();
        return readonly_view(self, h.layer->first(), {(py::ssize_t)h.layer->rank_in(), (py::ssize_t)h.layer->in_channels()});
      }, "first (R_in, in_channels), read-only float32.")
      .def_property_readonly("core", [](py::object self) {
        const auto& h = self.cast<const TuckerHandle&>();
        const auto& g = h.layer->geometry();
        return readonly_view(self, h.layer->core(), {(py::ssize_t)h.layer->rank_out(), (py::ssize_t)h.layer->rank_in(),
                             (py::ssize_t)g.kh, (py::ssize_t)g.kw});
      }, "core (R_out, R_in, kh, kw), read-only float32.")
      .def_property_readonly("last", [](py::object self) {
        const auto& h = self.cast<const TuckerHandle&>();
        return readonly_view(self, h.layer->last(), {(py::ssize_t)h.layer->out_channels(), (py::ssize_t)h.layer->rank_out()});
      }, "last (out_channels, R_out), read-only float32.")
      .def("__repr__", [](const TuckerHandle& h) {
        const auto& g = h.layer->geometry();
        return "TuckerConv2d(" + std::to_string(h.layer->in_channels()) + ", " +
               std::to_string(h.layer->out_channels()) + ", ranks=" + pair_str(h.layer->rank_in(), h.layer->rank_out()) +
               ", kernel_size=" + pair_str(g.kh, g.kw) + ", stride=" + pair_str(g.sh, g.sw) +
               ", padding=" + pair_str(g.ph, g.pw) + ", dilation=" + pair_str(g.dh, g.dw) +
               ", bias=" + (h.layer->bias() ? "True" : "False") + ", layout=\"" + layout_name(h.layout) + "\")";
      });
  def_conv_common(tucker);

  py::class_<CPHandle> cp(m, "CPConv2d", R"doc(
CP-factorized convolution (Lebedev et al. 2015) run as one fused operation: a 1x1 convolution
in_channels -> R, a kh x 1 depthwise convolution (the H-axis stride, padding and dilation), a
1 x kw depthwise convolution (the W-axis ones) and a 1x1 convolution R -> out_channels with the bias.
Equivalent to the dense weight W[o, c, y, x] = sum_r last[o, r] vertical[r, y] horizontal[r, x] first[r, c].

Parameters
----------
first : array_like, shape (R, in_channels)
vertical : array_like, shape (R, kh)
horizontal : array_like, shape (R, kw)
last : array_like, shape (out_channels, R)
bias : array_like, shape (out_channels,), optional
stride, padding, dilation : int or (int, int)
layout : "NCHW" or "NHWC"
)doc");
  cp.def(py::init([](py::handle f_obj, py::handle v_obj, py::handle h_obj, py::handle l_obj,
                      py::handle bias_obj, py::handle stride, py::handle padding, py::handle dilation,
                      py::handle layout) {
           const lrk::Layout l = parse_layout(layout);
           FloatArray f = weight_tensor(f_obj, "first", 2, "(R, in_channels)");
           FloatArray v = weight_tensor(v_obj, "vertical", 2, "(R, kh)");
           FloatArray hz = weight_tensor(h_obj, "horizontal", 2, "(R, kw)");
           FloatArray la = weight_tensor(l_obj, "last", 2, "(out_channels, R)");
           const py::ssize_t r = f.shape(0);
           if (v.shape(0) != r || hz.shape(0) != r || la.shape(1) != r) {
             throw py::value_error("rank mismatch: first " + shape_str(f) + " is (R, in_channels), vertical " +
                                   shape_str(v) + " must be (R, kh), horizontal " + shape_str(hz) +
                                   " must be (R, kw), last " + shape_str(la) + " must be (out_channels, R)");
           }
           FloatArray b;
           if (!bias_obj.is_none()) b = bias_vector(bias_obj, la.shape(0), "last of shape " + shape_str(la));
           const lrk::ConvGeometry g = conv_geometry(v.shape(1), hz.shape(1), stride, padding, dilation);
           auto layer = std::make_unique<lrk::CPConv2dLayer>(
               f.data(), r, f.shape(1), v.data(), v.shape(1), hz.data(), hz.shape(1), la.data(),
               la.shape(0), bias_obj.is_none() ? nullptr : b.data(), g);
           return new CPHandle{std::move(layer), l};
         }),
         py::arg("first"), py::arg("vertical"), py::arg("horizontal"), py::arg("last"),
         py::arg("bias") = py::none(), py::kw_only(), py::arg("stride") = 1, py::arg("padding") = 0,
         py::arg("dilation") = 1, py::arg("layout") = "NCHW")
      .def("__call__", [](const CPHandle& h, py::handle x) { return run_conv(h, x, "CPConv2d"); },
           py::arg("x"), "Apply the fused convolution to x in the layer's layout.")
      .def_property_readonly("rank", [](const CPHandle& h) { return h.layer->rank(); })
      .def_property_readonly("first", [](py::object self) {
        const auto& h = self.cast<const CPHandle&>();
        return readonly_view(self, h.layer->first(), {(py::ssize_t)h.layer->rank(), (py::ssize_t)h.layer->in_channels()});
      }, "first (R, in_channels), read-only float32.")
      .def_property_readonly("vertical", [](py::object self) {
        const auto& h = self.cast<const CPHandle&>();
        return readonly_view(self, h.layer->vertical(), {(py::ssize_t)h.layer->rank(), (py::ssize_t)h.layer->geometry().kh});
      }, "vertical (R, kh), read-only float32.")
      .def_property_readonly("horizontal", [](py::object self) {
        const auto& h = self.cast<const CPHandle&>();
        return readonly_view(self, h.layer->horizontal(), {(py::ssize_t)h.layer->rank(), (py::ssize_t)h.layer->geometry().kw});
      }, "horizontal (R, kw), read-only float32.")
      .def_property_readonly("last", [](py::object self) {
        const auto& h = self.cast<const CPHandle&>();
        return readonly_view(self, h.layer->last(), {(py::ssize_t)h.layer->out_channels(), (py::ssize_t)h.layer->rank()});
      }, "last (out_channels, R), read-only float32.")
      .def("__repr__", [](const CPHandle& h) {
        const auto& g = h.layer->geometry();
        return "CPConv2d(" + std::to_string(h.layer->in_channels()) + ", " +
               std::to_string(h.layer->out_channels()) + ", rank=" + std::to_string(h.layer->rank()) +
               ", kernel_size=" + pair_str(g.kh, g.kw) + ", stride=" + pair_str(g.sh, g.sw) +
               ", padding=" + pair_str(g.ph, g.pw) + ", dilation=" + pair_str(g.dh, g.dw) +
               ", bias=" + (h.layer->bias() ? "True" : "False") + ", layout=\"" + layout_name(h.layout) + "\")";
      });
  def_conv_common(cp);

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
  m.def(
      "set_num_threads",
      [](py::handle n_obj) {
        py::object index = py::isinstance<py::bool_>(n_obj)
                               ? py::object()
                               : py::reinterpret_steal<py::object>(PyNumber_Index(n_obj.ptr()));
        if (!index) {
          PyErr_Clear();
          throw py::type_error("set_num_threads expects an int, got " + py::repr(n_obj).cast<std::string>());
        }
        int overflow = 0;
        const long long n = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
        if (overflow > 0 || n > 4096) throw py::value_error("set_num_threads expects n <= 4096, got " + py::repr(n_obj).cast<std::string>());
        if (n < 1) throw py::value_error("set_num_threads expects n >= 1, got " + std::to_string(n));
        lrk::set_num_threads(static_cast<std::size_t>(n));
      },
      py::arg("n"), "Threads a layer call may use (>= 1). Results do not depend on it.");
  m.def("get_num_threads", &lrk::num_threads, "Threads a layer call may use.");
  m.def("default_num_threads", &lrk::default_num_threads,
        "The CPUs this process may run on (sched affinity): the default thread count.");
  m.def(
      "measure_read_bandwidth",
      [](std::size_t bytes, double seconds, std::size_t threads) {
        py::gil_scoped_release nogil;
        return lrk::measure_read_bandwidth(bytes, seconds, threads);
      },
      py::arg("bytes") = std::size_t(256) << 20, py::arg("seconds") = 0.3, py::arg("threads") = 1,
      "Streaming-read bandwidth in GB/s (best of repeated passes over a `bytes` buffer).");
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
