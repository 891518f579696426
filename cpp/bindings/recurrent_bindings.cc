// The cores of the recurrent layers and embedding tables (lrk::RecurrentLayer,
// lrk::EmbeddingTable), bound as private classes: python/lrkernels/recurrent.py and embedding.py
// build the public classes (torch's calling conventions, from_dense) on them. Every shape is
// checked again here and in the core, so a direct call cannot read out of bounds either.
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "arrays.h"
#include "lrkernels/recurrent.h"

namespace lrk_py {
namespace {

lrk::Factor factor_of(py::handle obj, const char* what) {
  py::array a = as_real_float_array(obj, what);
  FloatArray c = float32_c_aligned(a);
  lrk::Factor f;
  f.name = what;
  f.shape = shape_of(c);
  f.data.assign(c.data(), c.data() + c.size());
  return f;
}

// A dense matrix (an array) or a pair [U, V] (a list or tuple of two arrays).
lrk::MatrixFactors matrix_of(py::handle obj, const char* what) {
  lrk::MatrixFactors m;
  if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
    for (py::handle item : py::reinterpret_borrow<py::sequence>(obj)) {
      m.factors.push_back(factor_of(item, what));
    }
  } else {
    m.factors.push_back(factor_of(obj, what));
  }
  return m;
}

std::vector<float> vector_of(py::handle obj, const char* what) {
  if (obj.is_none()) return {};
  lrk::Factor f = factor_of(obj, what);
  if (f.shape.size() != 1) {
    throw py::value_error(std::string(what) + " must be 1-D, got shape " + lrk::shape_str(f.shape));
  }
  return std::move(f.data);
}

py::object views_of(py::handle owner, const lrk::MatrixFactors& m) {
  if (!m.low_rank()) return readonly_view(owner, m.factors[0].data.data(), m.factors[0].shape);
  return py::make_tuple(readonly_view(owner, m.factors[0].data.data(), m.factors[0].shape),
                        readonly_view(owner, m.factors[1].data.data(), m.factors[1].shape));
}

py::object vector_view(py::handle owner, const std::vector<float>& v) {
  if (v.empty()) return py::none();
  return readonly_view(owner, v.data(), lrk::Shape{v.size()});
}

// A state argument: None (an empty FloatArray: check `size() != 0`, a default-constructed array_t
// is a real 0-element array, not a null handle), or a C-contiguous float32 (batch, hidden) array.
FloatArray state_of(py::handle obj, std::size_t batch, std::size_t hidden, const char* what) {
  if (obj.is_none()) return FloatArray(std::vector<py::ssize_t>{0});
  FloatArray a = float32_c_aligned(as_real_float_array(obj, what));
  if (a.ndim() != 2 || static_cast<std::size_t>(a.shape(0)) != batch ||
      static_cast<std::size_t>(a.shape(1)) != hidden) {
    throw py::value_error(std::string(what) + " must have shape (" + std::to_string(batch) + ", " +
                          std::to_string(hidden) + "), got shape " + shape_str(a));
  }
  return a;
}

}  // namespace

void bind_recurrent(py::module_& m) {
  using lrk::RecurrentLayer;
  py::class_<RecurrentLayer>(m, "_RecurrentCore",
                             "The C++ core of one recurrent layer, one direction (use "
                             "lrkernels.LSTM, LowRankLSTM, GRU, LowRankGRU).")
      .def(py::init([](const std::string& cell, py::handle ih, py::handle hh, py::handle bias_ih,
                       py::handle bias_hh) {
             lrk::CellKind kind;
             if (cell == "lstm") {
               kind = lrk::CellKind::lstm;
             } else if (cell == "gru") {
               kind = lrk::CellKind::gru;
             } else {
               throw py::value_error("cell must be 'lstm' or 'gru', got '" + cell + "'");
             }
             return std::make_unique<RecurrentLayer>(
                 kind, matrix_of(ih, "weight_ih"), matrix_of(hh, "weight_hh"),
                 vector_of(bias_ih, "bias_ih"), vector_of(bias_hh, "bias_hh"));
           }),
           py::arg("cell"), py::arg("weight_ih"), py::arg("weight_hh"), py::arg("bias_ih"),
           py::arg("bias_hh"))
      .def_property_readonly(
          "cell",
          [](const RecurrentLayer& l) { return l.cell() == lrk::CellKind::lstm ? "lstm" : "gru"; })
      .def_property_readonly("input_size", &RecurrentLayer::input_size)
      .def_property_readonly("hidden_size", &RecurrentLayer::hidden_size)
      .def_property_readonly(
          "weight_ih",
          [](py::handle self) { return views_of(self, self.cast<const RecurrentLayer&>().ih()); })
      .def_property_readonly(
          "weight_hh",
          [](py::handle self) { return views_of(self, self.cast<const RecurrentLayer&>().hh()); })
      .def_property_readonly("bias_ih",
                             [](py::handle self) {
                               return vector_view(self,
                                                  self.cast<const RecurrentLayer&>().bias_ih());
                             })
      .def_property_readonly("bias_hh",
                             [](py::handle self) {
                               return vector_view(self,
                                                  self.cast<const RecurrentLayer&>().bias_hh());
                             })
      .def(
          "run",
          [](const RecurrentLayer& l, py::handle x_obj, py::handle h0_obj, py::handle c0_obj,
             bool reverse) {
            FloatArray x = float32_c_aligned(as_real_float_array(x_obj, "x"));
            if (x.ndim() != 3 || static_cast<std::size_t>(x.shape(2)) != l.input_size()) {
              throw py::value_error("x must have shape (seq, batch, " +
                                    std::to_string(l.input_size()) + "), got shape " +
                                    shape_str(x));
            }
            const std::size_t steps = x.shape(0), batch = x.shape(1), hid = l.hidden_size();
            const bool lstm = l.cell() == lrk::CellKind::lstm;
            FloatArray h0 = state_of(h0_obj, batch, hid, "h0");
            FloatArray c0(std::vector<py::ssize_t>{0});
            if (lstm) {
              c0 = state_of(c0_obj, batch, hid, "c0");
            } else if (!c0_obj.is_none()) {
              throw py::value_error("a GRU has no cell state: c0 must be None");
            }
            FloatArray out({steps, batch, hid});
            FloatArray h_n({batch, hid});
            FloatArray c_n(lstm ? std::vector<std::size_t>{batch, hid}
                                : std::vector<std::size_t>{0});
            const float* xp = x.data();
            const bool has_h0 = !h0_obj.is_none(), has_c0 = lstm && !c0_obj.is_none();
            const float* h0p = has_h0 ? h0.data() : nullptr;
            const float* c0p = has_c0 ? c0.data() : nullptr;
            float* outp = out.mutable_data();
            float* hnp = h_n.mutable_data();
            float* cnp = lstm ? c_n.mutable_data() : nullptr;
            const std::size_t in = l.input_size();
            without_gil(
                [&] { l.run(steps, batch, xp, in, h0p, c0p, reverse, outp, hid, hnp, cnp); });
            return py::make_tuple(out, h_n, lstm ? py::object(c_n) : py::object(py::none()));
          },
          py::arg("x"), py::arg("h0") = py::none(), py::arg("c0") = py::none(),
          py::arg("reverse") = false,
          "(out, h_n, c_n) for x of shape (seq, batch, input_size); h0/c0 (batch, hidden) or "
          "None; c_n is None for a GRU.");

  using lrk::EmbeddingTable;
  py::class_<EmbeddingTable>(m, "_EmbeddingCore",
                             "The C++ core of an embedding table (use lrkernels.Embedding, "
                             "LowRankEmbedding).")
      .def(py::init([](py::handle factors, std::int64_t padding_idx) {
             return std::make_unique<EmbeddingTable>(matrix_of(factors, "table"), padding_idx);
           }),
           py::arg("factors"), py::arg("padding_idx") = -1)
      .def_property_readonly("num_embeddings", &EmbeddingTable::num_embeddings)
      .def_property_readonly("embedding_dim", &EmbeddingTable::embedding_dim)
      .def_property_readonly("rank", &EmbeddingTable::rank)
      .def_property_readonly("padding_idx", &EmbeddingTable::padding_idx)
      .def_property_readonly("factors",
                             [](py::handle self) {
                               return views_of(self, self.cast<const EmbeddingTable&>().factors());
                             })
      .def(
          "lookup",
          [](const EmbeddingTable& t, py::array indices) {
            // By kind and size, not dtype identity: numpy's int64 may be 'l' or 'q' ('longlong').
            const py::dtype dt = indices.dtype();
            const bool native = dt.attr("isnative").cast<bool>();
            const bool is64 = native && dt.kind() == 'i' && dt.itemsize() == 8;
            if (!is64 && !(native && dt.kind() == 'i' && dt.itemsize() == 4)) {
              throw py::type_error("indices must be int32 or int64, got " +
                                   py::str(indices.dtype()).cast<std::string>());
            }
            if (!(indices.flags() & py::array::c_style)) {
              throw py::value_error("indices must be C-contiguous");
            }
            const std::size_t n = indices.size();
            FloatArray out({n, t.embedding_dim()});
            const void* ip = indices.data();
            float* op = out.mutable_data();
            without_gil([&] { t.lookup(ip, is64, n, op); });
            return out;
          },
          py::arg("indices"),
          "The rows of a C-contiguous int32/int64 index array, as (indices.size, dim).");
}

}  // namespace lrk_py
