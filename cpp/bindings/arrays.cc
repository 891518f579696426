#include "arrays.h"

#include <cstdint>

namespace lrk_py {

lrk::Shape shape_of(const py::array& a) {
  lrk::Shape s;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s.push_back(static_cast<std::size_t>(a.shape(i)));
  return s;
}

std::string shape_str(const py::array& a) { return lrk::shape_str(shape_of(a)); }

FloatArray float32_c_aligned(const py::array& a) {
  // array_t::ensure alone does not ask for alignment, and unaligned float loads fault on ARMv7.
  auto& api = py::detail::npy_api::get();
  PyObject* r = api.PyArray_FromAny_(a.ptr(), py::dtype::of<float>().release().ptr(), 0, 0,
                                     py::detail::npy_api::NPY_ARRAY_ENSUREARRAY_ |
                                         py::detail::npy_api::NPY_ARRAY_ALIGNED_ |
                                         py::array::c_style | py::array::forcecast,
                                     nullptr);
  if (r == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<FloatArray>(r);
}

namespace {

// numpy.ma.MaskedArray, looked up once and kept for the life of the process.
bool is_masked_array(py::handle obj) {
  static PyObject* masked = [] {
    py::object t = py::module_::import("numpy.ma").attr("MaskedArray");
    return t.release().ptr();
  }();
  return PyObject_IsInstance(obj.ptr(), masked) == 1;
}

}  // namespace

py::array as_real_float_array(py::handle obj, const char* what) {
  auto& api = py::detail::npy_api::get();
  if (Py_TYPE(obj.ptr()) == api.PyArray_Type_) {  // a plain ndarray: the per-call fast path
    py::array arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.dtype().kind() == 'f') return arr;
  } else if (is_masked_array(obj)) {
    throw py::type_error(std::string(what) +
                         " is a numpy masked array; a layer cannot honour a mask: pass "
                         "x.filled(value) (or np.asarray(x) to use the data under the mask)");
  }
  PyObject* converted = api.PyArray_FromAny_(obj.ptr(), nullptr, 0, 0,
                                             py::detail::npy_api::NPY_ARRAY_ENSUREARRAY_, nullptr);
  if (converted == nullptr) {
    // Keep the cause: a tensor that requires grad, a bfloat16 tensor, an __array__ that raised.
    py::error_already_set cause;
    std::string type = py::str(py::type::of(obj).attr("__name__")).cast<std::string>();
    const std::string cause_text = py::str(cause.type().attr("__name__")).cast<std::string>() +
                                   ": " + py::str(cause.value()).cast<std::string>();
    std::string text = std::string(what) +
                       " must be array-like (anything np.asarray accepts), "
                       "but converting the " +
                       type + " failed: " + cause_text;
    if (type == "Tensor") text += "; for a torch tensor pass t.detach().float().cpu().numpy()";
    py::raise_from(cause, PyExc_TypeError, text.c_str());
    throw py::error_already_set();
  }
  py::array arr = py::reinterpret_steal<py::array>(converted);
  if (arr.dtype().kind() != 'f') {
    throw py::type_error(std::string(what) + " must have a real floating-point dtype, got " +
                         py::str(arr.dtype()).cast<std::string>() + " with shape " +
                         shape_str(arr));
  }
  return arr;
}

py::array readonly_view(py::handle owner, const float* data, const lrk::Shape& shape) {
  std::vector<py::ssize_t> dims(shape.begin(), shape.end());
  py::array view(py::dtype::of<float>(), dims, data, owner);
  view.attr("setflags")(py::arg("write") = false);
  return view;
}

CallInput call_input(py::handle obj, bool conv) {
  py::array x = as_real_float_array(obj, "x");
  CallInput r;
  r.shape = shape_of(x);
  const bool rows = !conv && (x.ndim() == 1 || x.ndim() == 2);
  if (rows) {
    // float32 rows with unit inner stride are used in place whatever the row stride; anything else
    // (other dtypes, byte-swapped, column strides, negative strides) is converted once.
    const auto in = static_cast<py::ssize_t>(r.shape.back());
    const std::size_t batch = x.ndim() == 1 ? 1 : r.shape[0];
    const bool f32 = x.dtype().equal(py::dtype::of<float>());
    const py::ssize_t inner = x.strides(x.ndim() - 1);
    const py::ssize_t outer = x.ndim() == 1 ? 0 : x.strides(0);
    const bool aligned = reinterpret_cast<std::uintptr_t>(x.data()) % alignof(float) == 0;
    if (f32 && aligned && (inner == sizeof(float) || in == 1) && outer >= 0 &&
        outer % static_cast<py::ssize_t>(sizeof(float)) == 0 &&
        (batch <= 1 || outer >= in * static_cast<py::ssize_t>(sizeof(float)))) {
      r.keep_alive = x;
      r.data = static_cast<const float*>(x.data());
      r.ld = batch <= 1 ? r.shape.back() : static_cast<std::size_t>(outer) / sizeof(float);
      return r;
    }
  }
  FloatArray c = float32_c_aligned(x);
  r.data = c.data();
  r.ld = r.shape.empty() ? 0 : r.shape.back();
  r.keep_alive = c;
  return r;
}

std::pair<std::size_t, std::size_t> int_pair(py::handle obj, const char* what, long minimum) {
  auto fail = [&](const char* requirement) -> std::size_t {
    throw py::value_error(std::string(what) + " must be " + requirement + ", got " +
                          py::repr(obj).cast<std::string>());
  };
  auto one = [&](py::handle v) -> std::size_t {
    // operator.index semantics: ints and numpy integers, never floats (int(1.5) would truncate).
    py::object index = py::isinstance<py::bool_>(v)
                           ? py::object()
                           : py::reinterpret_steal<py::object>(PyNumber_Index(v.ptr()));
    if (!index) {
      PyErr_Clear();
      throw py::type_error(std::string(what) + " must be an int or a pair of ints, got " +
                           py::repr(obj).cast<std::string>());
    }
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    const std::string limit = "<= " + std::to_string(lrk::kMaxGeometry);
    if (overflow > 0 || x > static_cast<long long>(lrk::kMaxGeometry)) return fail(limit.c_str());
    if (overflow < 0 || x < minimum) {
      const std::string low = ">= " + std::to_string(minimum);
      return fail(low.c_str());
    }
    return static_cast<std::size_t>(x);
  };
  if (py::isinstance<py::tuple>(obj) || py::isinstance<py::list>(obj)) {
    py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
    if (seq.size() != 2) fail("an int or a pair of ints");
    return {one(seq[0]), one(seq[1])};
  }
  const std::size_t v = one(obj);
  return {v, v};
}

}  // namespace lrk_py
