// Conversions between Python objects and the C++ core's arrays, shared by the binding files.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "lrkernels/layer.h"

namespace lrk_py {

namespace py = pybind11;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// The shape of a numpy array as the core's Shape.
lrk::Shape shape_of(const py::array& a);
std::string shape_str(const py::array& a);
// A C-contiguous, aligned float32 array with the values of `a` (`a` itself when it already is one).
FloatArray float32_c_aligned(const py::array& a);
// np.asarray(obj), requiring a real floating-point dtype; TypeError otherwise.
py::array as_real_float_array(py::handle obj, const char* what);
// A read-only float32 view of memory owned by `owner` (a layer), kept alive by the view.
py::array readonly_view(py::handle owner, const float* data, const lrk::Shape& shape);

// x for a layer call as float32 the core can read: rows of a 1-D/2-D input are used in place when
// they already are float32 with unit inner stride; anything else is converted once.
struct CallInput {
  py::array keep_alive;
  const float* data = nullptr;
  lrk::Shape shape;
  std::size_t ld = 0;  // row stride in floats (linear layers)
};
CallInput call_input(py::handle obj, bool conv);

// An int or a pair of ints, each >= minimum and <= lrk::kMaxGeometry (operator.index semantics).
std::pair<std::size_t, std::size_t> int_pair(py::handle obj, const char* what, long minimum);

// Runs f() with the GIL released. Not gil_scoped_release: re-taking the GIL in a destructor is
// fatal when the interpreter is exiting, because CPython then ends a daemon thread with
// pthread_exit, whose forced unwinding may not pass a noexcept destructor (std::terminate). Here
// the GIL is re-taken in a plain frame that unwinding may leave; exceptions of f() are rethrown
// once the GIL is held again.
template <class F>
void without_gil(F&& f) {
  std::exception_ptr error;
  PyThreadState* state = PyEval_SaveThread();
  try {
    f();
  } catch (...) {
    error = std::current_exception();
  }
  PyEval_RestoreThread(state);
  if (error) std::rethrow_exception(error);
}

// Binds the layer classes, one per row of lrk::layer_kinds().
void bind_layers(py::module_& m);
// Binds the recurrent and embedding cores (_RecurrentCore, _EmbeddingCore).
void bind_recurrent(py::module_& m);

}  // namespace lrk_py
