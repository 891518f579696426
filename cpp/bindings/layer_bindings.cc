// The layer classes, generated from the table of layer kinds (lrk::layer_kinds()): constructor
// arguments, factor properties, docstrings and repr all come from the table. Only conversion
// between Python objects and arrays lives here; every check on shapes and geometry is the core's.
#include <cxxabi.h>
#include <pybind11/stl.h>

#include <cfloat>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <utility>

#include "arrays.h"
#include "lrkernels/dispatch.h"

namespace lrk_py {
namespace {

// The Python-side object of every layer class.
struct LayerHandle {
  std::unique_ptr<lrk::Layer> layer;
};
// One C++ type per kind, so that each kind is its own Python class.
template <std::size_t K>
struct KindHandle : LayerHandle {};
// Python classes are C++ types: one template instance per table row, up to this many rows.
constexpr std::size_t kMaxKinds = 16;

// The layer of `self`; TypeError for an object made with __new__ and never initialised.
// The Python type of LayerHandle, set when the classes are bound (a cached isinstance).
PyTypeObject* g_layer_type = nullptr;

const lrk::Layer& layer_of(py::handle self) {
  if (!PyObject_TypeCheck(self.ptr(), g_layer_type)) {
    throw py::type_error("expected an lrkernels layer, got " +
                         py::str(py::type::of(self).attr("__name__")).cast<std::string>());
  }
  // The holder exists only after __init__: casting an instance made by __new__ alone reads an
  // unset value pointer (a crash), so look at the instance's state first.
  auto* inst = reinterpret_cast<py::detail::instance*>(self.ptr());
  const auto v_h = inst->get_value_and_holder();
  const auto* h =
      v_h && v_h.holder_constructed() ? static_cast<const LayerHandle*>(v_h.value_ptr()) : nullptr;
  if (h == nullptr || !h->layer) {
    throw py::type_error(py::str(py::type::of(self).attr("__name__")).cast<std::string>() +
                         " object is not initialized (created with __new__ without __init__)");
  }
  return *h->layer;
}
const lrk::ConvChain& conv_of(py::handle self) {
  return static_cast<const lrk::ConvChain&>(layer_of(self));
}

// A convolution's getter of the geometry pair (g.*h, g.*w), e.g. (kh, kw).
auto geometry_pair(std::size_t lrk::ConvGeometry::*h, std::size_t lrk::ConvGeometry::*w) {
  return [h, w](py::handle self) {
    const lrk::ConvGeometry& g = conv_of(self).geometry();
    return py::make_tuple(g.*h, g.*w);
  };
}

py::tuple as_tuple(const lrk::Shape& s) {
  py::tuple t(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) t[i] = py::int_(s[i]);
  return t;
}

std::string pair_str(std::size_t a, std::size_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

lrk::Layout parse_layout(py::handle obj) {
  if (py::isinstance<py::str>(obj)) {
    const std::string v = obj.cast<std::string>();
    if (v == "NCHW") return lrk::Layout::nchw;
    if (v == "NHWC") return lrk::Layout::nhwc;
  }
  throw py::value_error("layout must be \"NCHW\" or \"NHWC\", got " +
                        py::repr(obj).cast<std::string>());
}

// The activation keyword: None, "relu", "relu6" or a pair (min, max) of numbers or None (an open
// side), as the layer's output bounds (float32). Checked here so that the error names the value.
std::pair<float, float> parse_activation(py::handle obj) {
  const std::string shown = py::repr(obj).cast<std::string>();
  const char* expected =
      "activation must be None, \"relu\", \"relu6\" or a pair (min, max) of "
      "floats or None, got ";
  if (obj.is_none()) return {-INFINITY, INFINITY};
  if (py::isinstance<py::str>(obj)) {
    const std::string name = obj.cast<std::string>();
    if (name == "relu") return {0.0f, INFINITY};
    if (name == "relu6") return {0.0f, 6.0f};
    throw py::value_error("unknown activation " + shown +
                          "; the activations are None, \"relu\", \"relu6\" or a pair (min, max)");
  }
  if (!py::isinstance<py::tuple>(obj) && !py::isinstance<py::list>(obj)) {
    throw py::type_error(expected + shown);
  }
  py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
  if (seq.size() != 2) throw py::value_error(expected + shown);
  auto bound = [&](py::handle v, float open) {
    if (v.is_none()) return open;
    if (py::isinstance<py::bool_>(v) || py::isinstance<py::str>(v) ||
        py::isinstance<py::bytes>(v)) {
      throw py::type_error(expected + shown);
    }
    py::object f = py::reinterpret_steal<py::object>(PyNumber_Float(v.ptr()));
    if (!f) {
      PyErr_Clear();
      throw py::type_error(expected + shown);
    }
    const double d = PyFloat_AsDouble(f.ptr());
    if (d > FLT_MAX) return INFINITY;  // beyond float32: no float32 output lies past it
    if (d < -FLT_MAX) return -INFINITY;
    return static_cast<float>(d);  // NaN stays NaN (refused below)
  };
  const float lo = bound(seq[0], -INFINITY), hi = bound(seq[1], INFINITY);
  try {
    lrk::check_output_bounds(lo, hi);
  } catch (const std::invalid_argument& e) {
    throw py::value_error("activation=" + shown + ": " + e.what());
  }
  return {lo, hi};
}

// The activation of a layer as given to the constructor, canonical: None, "relu", "relu6" or the
// (min, max) tuple of floats.
py::object activation_of(const lrk::Layer& l) {
  const float lo = l.output_min(), hi = l.output_max();
  if (!l.has_output_clamp()) return py::none();
  if (lo == 0.0f && hi == INFINITY) return py::str("relu");
  if (lo == 0.0f && hi == 6.0f) return py::str("relu6");
  return py::make_tuple(static_cast<double>(lo), static_cast<double>(hi));
}

// Weights are converted to float32 once, here: a finite value beyond the float32 range would
// silently become inf in every output, so it is an error. (Inputs of a call are converted as
// numpy's astype does; README, "Inputs".)
void check_float32_range(const py::array& source, const FloatArray& converted, const char* what) {
  if (source.dtype().itemsize() <= 4) return;
  py::module_ np = py::module_::import("numpy");
  py::object overflow = np.attr("isinf")(converted).attr("__and__")(np.attr("isfinite")(source));
  if (overflow.attr("any")().cast<bool>()) {
    throw py::value_error(std::string(what) +
                          " has finite values beyond the float32 range "
                          "(|x| > 3.4e38) that would become inf; rescale the weights");
  }
}

// Constructor arguments by the table: factors (positional or keyword), bias, the keyword-only
// activation, and for the convolutions the keyword-only stride, padding, dilation and layout.
std::unique_ptr<lrk::Layer> construct(const lrk::LayerKind& kind, py::args args,
                                      py::kwargs kwargs) {
  const std::size_t nf = kind.factors.size();
  std::vector<std::string> names;
  for (const auto& f : kind.factors) names.emplace_back(f.name);
  names.emplace_back("bias");
  const std::vector<std::string> keyword_only =
      kind.conv ? std::vector<std::string>{"stride", "padding", "dilation", "layout", "algorithm"}
                : std::vector<std::string>{};
  const std::string where = std::string(kind.name) + "()";
  if (args.size() > names.size()) {
    throw py::type_error(where + " takes at most " + std::to_string(names.size()) +
                         " positional arguments (" + std::to_string(args.size()) + " given)");
  }
  std::vector<py::object> values(names.size());
  for (std::size_t i = 0; i < args.size(); ++i) values[i] = args[i];
  py::object stride = py::int_(1), padding = py::int_(0), dilation = py::int_(1),
             layout = py::str("NCHW"), activation = py::none(), precision = py::str("fp32"),
             algorithm = py::str("auto");
  for (auto item : kwargs) {
    const std::string key = item.first.cast<std::string>();
    bool found = false;
    for (std::size_t i = 0; i < names.size() && !found; ++i) {
      if (key != names[i]) continue;
      if (values[i])
        throw py::type_error(where + " got multiple values for argument '" + key + "'");
      values[i] = py::reinterpret_borrow<py::object>(item.second);
      found = true;
    }
    if (!found && key == "activation") {
      activation = py::reinterpret_borrow<py::object>(item.second);
      found = true;
    }
    if (!found && key == "precision" && kind.reduced_precision) {
      precision = py::reinterpret_borrow<py::object>(item.second);
      found = true;
    }
    if (!found && kind.conv) {
      py::object* slot = key == "stride"      ? &stride
                         : key == "padding"   ? &padding
                         : key == "dilation"  ? &dilation
                         : key == "layout"    ? &layout
                         : key == "algorithm" ? &algorithm
                                              : nullptr;
      if (slot != nullptr) *slot = py::reinterpret_borrow<py::object>(item.second), found = true;
    }
    if (!found) throw py::type_error(where + " got an unexpected keyword argument '" + key + "'");
  }
  lrk::LayerParams params;
  if (kind.conv) params.layout = parse_layout(layout);
  std::tie(params.output_min, params.output_max) = parse_activation(activation);
  if (!py::isinstance<py::str>(precision) ||
      !lrk::precision_from_name(precision.cast<std::string>(), &params.precision)) {
    throw py::value_error(where + ": precision must be \"fp32\", \"fp16\" or \"int8\", got " +
                          py::repr(precision).cast<std::string>());
  }
  if (!py::isinstance<py::str>(algorithm) ||
      !lrk::algorithm_from_name(algorithm.cast<std::string>(), &params.algorithm)) {
    throw py::value_error(where + ": algorithm must be \"auto\", \"direct\" or \"winograd\", got " +
                          py::repr(algorithm).cast<std::string>());
  }
  std::vector<lrk::Factor> factors(nf);
  for (std::size_t i = 0; i < nf; ++i) {
    if (!values[i]) throw py::type_error(where + " missing required argument '" + names[i] + "'");
    py::array a = as_real_float_array(values[i], kind.factors[i].name);
    factors[i].shape = shape_of(a);
    if (a.ndim() == static_cast<py::ssize_t>(kind.factors[i].ndim) && a.size() > 0) {
      FloatArray c = float32_c_aligned(a);
      check_float32_range(a, c, kind.factors[i].name);
      factors[i].data.assign(c.data(), c.data() + c.size());
    }
  }
  FloatArray bias;
  const bool has_bias = values[nf] && !values[nf].is_none();
  lrk::Shape bias_shape;
  if (has_bias) {
    py::array b = as_real_float_array(values[nf], "bias");
    bias_shape = shape_of(b);
    bias = float32_c_aligned(b);
    check_float32_range(b, bias, "bias");
  }
  if (kind.conv) {
    auto& g = params.geometry;
    std::tie(g.sh, g.sw) = int_pair(stride, "stride", 1);
    std::tie(g.ph, g.pw) = int_pair(padding, "padding", 0);
    std::tie(g.dh, g.dw) = int_pair(dilation, "dilation", 1);
  }
  return lrk::create_layer(kind, std::move(factors), has_bias ? bias.data() : nullptr, bias_shape,
                           params);
}

std::string repr(py::handle self) {
  const lrk::Layer& l = layer_of(self);
  std::string r = l.kind() + "(";
  if (!l.is_conv()) {
    r += "in_features=" + std::to_string(l.in_dim()) +
         ", out_features=" + std::to_string(l.out_dim());
    if (!l.ranks().empty()) r += ", rank=" + std::to_string(l.ranks()[0]);
  } else {
    const auto& c = static_cast<const lrk::ConvChain&>(l);
    const auto& g = c.geometry();
    r += std::to_string(l.in_dim()) + ", " + std::to_string(l.out_dim());
    if (l.ranks().size() == 2) r += ", ranks=" + pair_str(l.ranks()[0], l.ranks()[1]);
    if (l.ranks().size() == 1) r += ", rank=" + std::to_string(l.ranks()[0]);
    r += ", kernel_size=" + pair_str(g.kh, g.kw) + ", stride=" + pair_str(g.sh, g.sw) +
         ", padding=" + pair_str(g.ph, g.pw) + ", dilation=" + pair_str(g.dh, g.dw);
  }
  r += std::string(", bias=") + (l.bias() ? "True" : "False");
  if (l.is_conv()) {
    r += std::string(", layout=\"") +
         lrk::layout_name(static_cast<const lrk::ConvChain&>(l).layout()) + "\"";
  }
  if (l.precision() != lrk::Precision::fp32) {
    r += std::string(", precision=\"") + lrk::precision_name(l.precision()) + "\"";
  }
  if (l.has_output_clamp()) {
    const py::object a = activation_of(l);
    r += ", activation=" + (py::isinstance<py::str>(a) ? "\"" + a.cast<std::string>() + "\""
                                                       : py::repr(a).cast<std::string>());
  }
  return r + ")";
}

// A new C-contiguous float32 array, its dimensions passed on the stack (py::array_t's
// constructor would build a std::vector per call).
py::array_t<float> new_float32_array(const lrk::Shape& shape) {
  auto& api = py::detail::npy_api::get();
  Py_intptr_t dims[lrk::Shape::kMaxDims];
  for (std::size_t i = 0; i < shape.size(); ++i) dims[i] = static_cast<Py_intptr_t>(shape[i]);
  PyObject* a =
      api.PyArray_NewFromDescr_(api.PyArray_Type_, py::dtype::of<float>().release().ptr(),
                                static_cast<int>(shape.size()), dims, nullptr, nullptr, 0, nullptr);
  if (a == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::array_t<float>>(a);
}

py::array_t<float> call(py::handle self, py::handle x_obj) {
  const lrk::Layer& l = layer_of(self);
  CallInput in = call_input(x_obj, l.is_conv());
  const lrk::Shape y_shape = l.output_shape(in.shape);  // checks x before anything is allocated
  lrk::checked_elements(y_shape, l.kind().c_str());
  py::array_t<float> y = new_float32_array(y_shape);
  float* yp = y.mutable_data();
  try {
    without_gil([&] { l.run(in.data, in.shape, in.ld, yp); });
  } catch (abi::__forced_unwind&) {
    // A daemon thread ended by the exiting interpreter while re-taking the GIL: this frame is
    // unwound without the GIL, so its references must not be dropped (a race with finalization).
    in.keep_alive.release();
    y.release();
    throw;
  }
  return y;
}

// Properties every layer has, on the common base class.
void def_common(py::class_<LayerHandle>& base) {
  base.def(
          "__call__", &call, py::arg("x"),
          "Apply the layer to x: (in_features,) or (batch, in_features) for a linear layer, 4-D in "
          "the layer's layout for a convolution.")
      .def_property_readonly(
          "kind", [](py::handle self) { return layer_of(self).kind(); },
          "The layer kind: the class name of the built-in layer.")
      .def_property_readonly(
          "factors",
          [](py::handle self) {
            const auto& fs = layer_of(self).factors();
            py::tuple t(fs.size());
            for (std::size_t i = 0; i < fs.size(); ++i)
              t[i] = readonly_view(self, fs[i].data.data(), fs[i].shape);
            return t;
          },
          "The factors in constructor order (bias excluded), read-only float32.")
      .def_property_readonly(
          "ranks", [](py::handle self) { return as_tuple(layer_of(self).ranks()); },
          "() for a dense layer, (rank,) or (R_in, R_out) for a factorized one.")
      .def_property_readonly(
          "bias",
          [](py::handle self) -> py::object {
            const lrk::Layer& l = layer_of(self);
            if (l.bias() == nullptr) return py::none();
            return readonly_view(self, l.bias(), {l.out_dim()});
          },
          "bias (out_features,) or (out_channels,), read-only float32, or None.")
      .def_property_readonly(
          "activation", [](py::handle self) { return activation_of(layer_of(self)); },
          "The fused output clamp as given to the constructor: None, \"relu\", \"relu6\" or a "
          "(min, max) tuple of floats.")
      .def_property_readonly(
          "output_min",
          [](py::handle self) { return static_cast<double>(layer_of(self).output_min()); },
          "The lower bound of every output element (float32 value; -inf when open).")
      .def_property_readonly(
          "output_max",
          [](py::handle self) { return static_cast<double>(layer_of(self).output_max()); },
          "The upper bound of every output element (float32 value; inf when open).")
      .def_property_readonly(
          "precision",
          [](py::handle self) { return lrk::precision_name(layer_of(self).precision()); },
          "\"fp32\", \"fp16\" or \"int8\": the arithmetic of the layer's kernels (inputs and "
          "outputs "
          "are float32 in every case).")
      .def_property_readonly(
          "kernels",
          [](py::handle self) {
            py::list names;
            for (const auto& n : layer_of(self).kernel_names(lrk::active_kernel_set())) {
              names.append(n);
            }
            return names;
          },
          "The GEMM micro-kernel configs a call uses now (active ISA, precision, CPU features).")
      .def("__repr__", &repr);
}

// The class docstring: the table's summary, then the parameters from the factors.
std::string docstring(const lrk::LayerKind& kind) {
  std::string d = std::string(kind.doc) + "\n\nParameters\n----------\n";
  for (const auto& f : kind.factors)
    d += std::string(f.name) + " : array_like, shape " + f.dims + "\n";
  const std::string out = kind.conv ? "out_channels" : "out_features";
  d += "bias : array_like, shape (" + out + ",), optional\n";
  if (kind.reduced_precision) {
    d += "precision : \"fp32\" (default), \"fp16\" or \"int8\", keyword-only\n"
         "    fp16: weights stored as IEEE half (half the bytes), f32 arithmetic. int8: weights\n"
         "    quantized per output channel (symmetric), inputs per row at call time (asymmetric),\n"
         "    int32 sums, float32 output; a row with NaN or inf gives a NaN output row.\n"
         "    lrkernels.reference.qd8_linear / f16w_linear define the arithmetic.\n";
  }
  d += "activation : None (default), \"relu\", \"relu6\" or (min, max), keyword-only\n"
       "    A clamp of every output element fused into the last stage's output path: \"relu\" is\n"
       "    (0, inf), \"relu6\" is (0, 6), a pair of floats is hardtanh / clamp (None or -inf/inf\n"
       "    for an open side). NaN outputs stay NaN.\n";
  if (kind.conv) {
    d += "stride, padding, dilation : int or (int, int), keyword-only\n"
         "    Padding is symmetric per axis (rows top and bottom, columns left and right).\n"
         "algorithm : \"auto\" (default), \"direct\" or \"winograd\", keyword-only\n"
         "    How a kxk stage is computed: direct (implicit GEMM over the taps) or Winograd\n"
         "    F(2x2, 3x3) (3x3, stride 1, dilation 1, fp32: 2.25x fewer multiply-adds; its error\n"
         "    bound is in the README, about 1e-6 relative on Gaussian data). auto picks it where\n"
         "    it is faster: fp32 3x3 stride-1 cores with >= 16 input and output channels.\n"
         "    layer.algorithm tells which one the layer uses.\n"
         "layout : \"NCHW\" (default) or \"NHWC\", keyword-only\n"
         "    Layout of the input and of the returned output.\n";
  }
  d += "\nThe factors are converted to float32 and packed once, here, for the active ISA. Calling "
       "the\n"
       "layer with x of shape ";
  d += kind.conv ? "(N, C, H, W) (or (N, H, W, C)), any real float dtype and strides, returns a\n"
                   "new float32 array (N, out_channels, Ho, Wo) (or (N, Ho, Wo, out_channels)).\n"
                 : "(in_features,) or (batch, in_features), any real float dtype and strides,\n"
                   "returns a new float32 array (out_features,) or (batch, out_features).\n";
  return d;
}

template <std::size_t K>
void bind_kind(py::module_& m, const lrk::LayerKind& kind) {
  static const std::string doc = docstring(kind);  // pybind keeps the pointer
  // dynamic_attr: from_dense records how the rank was found on the layer (rank_choice).
  py::class_<KindHandle<K>, LayerHandle> cls(m, kind.name, doc.c_str(), py::dynamic_attr());
  // pybind ignores a second __init__ on an initialized object; lrkernels/__init__.py refuses it.
  cls.def(py::init([&kind](py::args args, py::kwargs kwargs) {
            auto h = std::make_unique<KindHandle<K>>();
            h->layer = construct(kind, std::move(args), std::move(kwargs));
            return h;
          }),
          "See the class docstring for the arguments.");
  cls.def_property_readonly("_initialized", [](py::handle self) {
    auto* inst = reinterpret_cast<py::detail::instance*>(self.ptr());
    const auto v_h = inst->get_value_and_holder();
    return static_cast<bool>(v_h && v_h.holder_constructed());
  });
  py::tuple names(kind.factors.size());
  for (std::size_t i = 0; i < kind.factors.size(); ++i) {
    const lrk::FactorSpec& f = kind.factors[i];
    names[i] = py::str(f.name);
    cls.def_property_readonly(
        f.name,
        [i](py::handle self) {
          const lrk::Factor& factor = layer_of(self).factors()[i];
          return readonly_view(self, factor.data.data(), factor.shape);
        },
        (std::string(f.name) + " " + f.dims + ", read-only float32.").c_str());
  }
  cls.attr("factor_names") = names;
  if (kind.factors.size() == 1 && std::string(kind.factors[0].name) != "weight") {
    cls.def_property_readonly(
        "weight",
        [](py::handle self) {
          const lrk::Factor& factor = layer_of(self).factors()[0];
          return readonly_view(self, factor.data.data(), factor.shape);
        },
        "The dense weight (an alias of the factor).");
  }
  if (std::string(kind.rank_names) == "(rank,)" || std::string(kind.rank_names) == "(R,)") {
    cls.def_property_readonly("rank", [](py::handle self) { return layer_of(self).ranks()[0]; });
  }
  if (!kind.conv) {
    cls.def_property_readonly("in_features",
                              [](py::handle self) { return layer_of(self).in_dim(); })
        .def_property_readonly("out_features",
                               [](py::handle self) { return layer_of(self).out_dim(); });
    return;
  }
  cls.def_property_readonly("in_channels", [](py::handle self) { return conv_of(self).in_dim(); })
      .def_property_readonly("out_channels",
                             [](py::handle self) { return conv_of(self).out_dim(); })
      .def_property_readonly("kernel_size",
                             geometry_pair(&lrk::ConvGeometry::kh, &lrk::ConvGeometry::kw))
      .def_property_readonly("stride",
                             geometry_pair(&lrk::ConvGeometry::sh, &lrk::ConvGeometry::sw))
      .def_property_readonly("padding",
                             geometry_pair(&lrk::ConvGeometry::ph, &lrk::ConvGeometry::pw))
      .def_property_readonly("dilation",
                             geometry_pair(&lrk::ConvGeometry::dh, &lrk::ConvGeometry::dw))
      .def_property_readonly(
          "layout",
          [](py::handle self) { return std::string(lrk::layout_name(conv_of(self).layout())); })
      .def_property_readonly(
          "algorithm",
          [](py::handle self) {
            return std::string(lrk::algorithm_name(conv_of(self).algorithm()));
          },
          "\"direct\" or \"winograd\": how the kxk stage is computed (algorithm=\"auto\" "
          "resolved at construction).");
}

template <std::size_t... K>
void bind_kinds(py::module_& m, std::index_sequence<K...>) {
  const std::size_t n = lrk::layer_kinds().size();
  ((K < n ? bind_kind<K>(m, lrk::layer_kinds()[K]) : void()), ...);
}

}  // namespace

void bind_layers(py::module_& m) {
  if (lrk::layer_kinds().size() > kMaxKinds) {
    throw std::logic_error("bind_layers: more layer kinds than kMaxKinds; raise it");
  }
  py::class_<LayerHandle> base(m, "Layer", "Base class of every lrkernels layer.",
                               py::dynamic_attr());
  g_layer_type = reinterpret_cast<PyTypeObject*>(base.ptr());
  def_common(base);
  bind_kinds(m, std::make_index_sequence<kMaxKinds>());
}

}  // namespace lrk_py
