"""LSTM / GRU layers (dense and low-rank) against the numpy reference, on every ISA.

Hidden sizes sit around the vector widths of the cell kernels (4, 8, 16 lanes) and the GEMM panel
widths (8, 16, 32); sequence lengths 0, 1 and odd; batch 1 and more; both directions.
"""

from __future__ import annotations

import numpy as np
import pytest

import lrkernels
from lrkernels import reference

CELLS = {
    "lstm": (4, lrkernels.LSTM, lrkernels.LowRankLSTM, reference.lstm),
    "gru": (3, lrkernels.GRU, lrkernels.LowRankGRU, reference.gru),
}

# (seq, batch, input_size, hidden, r_ih, r_hh); None: that matrix dense
SHAPES = [
    (0, 2, 3, 5, 2, 2),
    (1, 1, 4, 8, None, 3),
    (7, 3, 9, 17, 4, None),
    (5, 1, 16, 33, 5, 7),
    (3, 2, 33, 16, None, None),
    (4, 5, 12, 31, 12, 31),
]


def _weights(rng, gates, in_size, hidden, r_ih, r_hh, scale=0.4):
    def matrix(cols, r):
        if r is None:
            return (rng.standard_normal((gates * hidden, cols)) * scale / np.sqrt(cols)).astype(
                np.float32
            )
        U = rng.standard_normal((gates * hidden, r)) * scale / np.sqrt(r)
        V = rng.standard_normal((r, cols)) / np.sqrt(cols)
        return (U.astype(np.float32), V.astype(np.float32))

    w_ih, w_hh = matrix(in_size, r_ih), matrix(hidden, r_hh)
    b_ih = rng.standard_normal(gates * hidden).astype(np.float32) * 0.5
    b_hh = rng.standard_normal(gates * hidden).astype(np.float32) * 0.5
    return w_ih, w_hh, b_ih, b_hh


def _layer(cell, w_ih, w_hh, b_ih, b_hh, **kw):
    _, dense_cls, low_cls, _ = CELLS[cell]
    low = isinstance(w_ih, tuple) or isinstance(w_hh, tuple)
    return (low_cls if low else dense_cls)(w_ih, w_hh, b_ih, b_hh, **kw)


def _state(cell, rng, batch, hidden):
    h0 = rng.standard_normal((batch, hidden)).astype(np.float32)
    if cell == "lstm":
        return h0, rng.standard_normal((batch, hidden)).astype(np.float32)
    return h0


def _run_reference(cell, x, w, state, reverse):
    out, final = CELLS[cell][3](x, *w, state=state, reverse=reverse)
    return out, final


def _close(a, b, what):
    a64 = np.asarray(a, np.float64)
    np.testing.assert_allclose(a64, b, rtol=1e-4, atol=2e-5, err_msg=what)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_reference(isa, rng, cell, shape, reverse):
    steps, batch, in_size, hidden, r_ih, r_hh = shape
    gates = CELLS[cell][0]
    w = _weights(rng, gates, in_size, hidden, r_ih, r_hh)
    layer = _layer(cell, *w)
    x = rng.standard_normal((steps, batch, in_size)).astype(np.float32)
    for state in (None, _state(cell, rng, batch, hidden)):
        out, final = layer(x, state, reverse=reverse)
        ref_out, ref_final = _run_reference(cell, x, w, state, reverse)
        assert out.shape == (steps, batch, hidden) and out.dtype == np.float32
        _close(out, ref_out, f"{isa} {cell} {shape} output")
        if cell == "lstm":
            assert final[0].shape == final[1].shape == (1, batch, hidden)
            _close(final[0][0], ref_final[0], "h_n")
            _close(final[1][0], ref_final[1], "c_n")
        else:
            assert final.shape == (1, batch, hidden)
            _close(final[0], ref_final, "h_n")
        assert lrkernels.last_used_isa() == isa


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_saturated_gates_and_extremes(isa, rng, cell):
    """Large pre-activations (sigmoid/tanh at their limits), tiny ones (tanh's cancellation
    region) and infinities: the kernel's exp/sigmoid/tanh against float64."""
    gates = CELLS[cell][0]
    hidden, in_size = 37, 6
    w = list(_weights(rng, gates, in_size, hidden, None, None))
    for scale in (1e-4, 30.0):
        w[0] = (w[0] * scale).astype(np.float32)
        layer = _layer(cell, *w)
        x = rng.standard_normal((6, 2, in_size)).astype(np.float32)
        out, _ = layer(x)
        ref, _ = _run_reference(cell, x, w, None, False)
        _close(out, ref, f"scale {scale}")
    x = np.full((2, 1, in_size), np.inf, np.float32)
    x[1] = -np.inf
    w[0] = np.abs(w[0])
    out, _ = _layer(cell, *w)(x)
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1.0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_nan_propagates_only_in_its_row(isa, rng, cell):
    gates = CELLS[cell][0]
    layer = _layer(cell, *_weights(rng, gates, 5, 19, 3, 4))
    x = rng.standard_normal((6, 3, 5)).astype(np.float32)
    x[2, 1, 0] = np.nan
    out, _ = layer(x)
    assert np.all(np.isfinite(out[:2])) and np.all(np.isfinite(out[:, [0, 2]]))
    assert np.all(np.isnan(out[2:, 1]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_threads_bitwise_identical(rng, cell):
    # One step of 2 * 32 * G * 192^2 >= 7 MFLOP: above the driver's 4 MFLOP bar, so the
    # recurrent GEMMs really split over threads.
    gates = CELLS[cell][0]
    layer = _layer(cell, *_weights(rng, gates, 96, 192, 40, None))
    x = rng.standard_normal((5, 32, 96)).astype(np.float32)
    before = lrkernels.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            lrkernels.set_num_threads(n)
            out, final = layer(x)
            results.append(out)
    finally:
        lrkernels.set_num_threads(before)
    for r in results[1:]:
        assert np.array_equal(r, results[0])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layouts_and_state_shapes(rng, cell):
    gates = CELLS[cell][0]
    w = _weights(rng, gates, 7, 11, 3, 5)
    layer = _layer(cell, *w)
    bf = _layer(cell, *w, batch_first=True)
    x = rng.standard_normal((4, 3, 7)).astype(np.float32)
    state = _state(cell, rng, 3, 11)
    out, final = layer(x, state)
    out_bf, final_bf = bf(np.ascontiguousarray(x.transpose(1, 0, 2)), state)
    assert np.array_equal(out_bf, out.transpose(1, 0, 2))
    # (1, batch, H) states as torch passes them, float64 input converted
    s3 = tuple(s[None] for s in state) if cell == "lstm" else state[None]
    out3, _ = layer(x.astype(np.float64), s3)
    assert np.array_equal(out3, out)
    # unbatched: (seq, input_size), states (H,) or (1, H)
    s1 = tuple(s[1] for s in state) if cell == "lstm" else state[1]
    out_u, final_u = layer(x[:, 1], s1)
    assert out_u.shape == (4, 11)
    np.testing.assert_allclose(out_u, out[:, 1], rtol=1e-6, atol=1e-7)
    h_u = final_u[0] if cell == "lstm" else final_u
    assert h_u.shape == (1, 11)
    # an empty sequence returns the initial state
    out0, final0 = layer(x[:0], state)
    h0 = final0[0] if cell == "lstm" else final0
    assert out0.shape == (0, 3, 11)
    assert np.array_equal(h0[0], state[0] if cell == "lstm" else state)


def test_matches_torch_modules(rng):
    torch = pytest.importorskip("torch")
    for cell, module in (("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        torch.manual_seed(0)
        m = module(10, 24)
        p = {k: v.detach().numpy() for k, v in m.named_parameters()}
        layer = CELLS[cell][1](
            p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]
        )
        x = rng.standard_normal((6, 2, 10)).astype(np.float32)
        with torch.no_grad():
            ref, ref_final = m(torch.from_numpy(x))
        out, final = layer(x)
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-5)
        h = final[0] if cell == "lstm" else final
        ref_h = ref_final[0] if cell == "lstm" else ref_final
        np.testing.assert_allclose(h, ref_h.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_repeated_calls_reuse_scratch(rng, cell):
    gates = CELLS[cell][0]
    layer = _layer(cell, *_weights(rng, gates, 32, 64, 16, 16))
    x = rng.standard_normal((20, 2, 32)).astype(np.float32)
    layer(x)
    before = lrkernels._core._scratch_allocations()
    for _ in range(5):
        layer(x)
    assert lrkernels._core._scratch_allocations() == before


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bad_input_raises_clear_errors(rng, cell):
    gates, dense_cls, low_cls, _ = CELLS[cell]
    w_ih, w_hh, b_ih, b_hh = _weights(rng, gates, 5, 6, None, None)
    layer = dense_cls(w_ih, w_hh, b_ih, b_hh)
    x = np.zeros((3, 2, 5), np.float32)
    with pytest.raises(ValueError, match=r"\(3, 2, 4\)"):
        layer(np.zeros((3, 2, 4), np.float32))
    with pytest.raises(ValueError, match="input_size=5"):
        layer(np.zeros((5,), np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        layer(np.zeros((3, 2, 5), np.int64))
    bad_state = np.zeros((3, 6), np.float32)
    with pytest.raises(ValueError, match=r"\(3, 6\)"):
        layer(x, (bad_state, bad_state) if cell == "lstm" else bad_state)
    with pytest.raises(TypeError):
        layer(x, np.zeros((2, 6), np.float32) if cell == "lstm" else (bad_state, bad_state))
    with pytest.raises(ValueError, match=r"weight_hh must be \(" + str(gates * 6) + ", 6\\)"):
        dense_cls(w_ih, w_hh[:, :5], b_ih, b_hh)
    with pytest.raises(ValueError, match="rows"):
        dense_cls(w_ih[:-1], w_hh[:-1])
    with pytest.raises(ValueError, match="bias_ih"):
        dense_cls(w_ih, w_hh, b_ih[:-1], b_hh)
    with pytest.raises(TypeError, match="dense layer"):
        dense_cls((w_ih, w_ih), w_hh)
    with pytest.raises(ValueError, match="rank mismatch"):
        low_cls((w_ih[:, :3], w_ih[:2]), w_hh)
    with pytest.raises(ValueError, match="exactly one"):
        low_cls.from_dense(w_ih, w_hh)
    with pytest.raises(ValueError, match="exactly one"):
        low_cls.from_dense(w_ih, w_hh, rank=2, energy=0.9)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_from_dense(rng, cell):
    gates, dense_cls, low_cls, _ = CELLS[cell]
    w_ih, w_hh, b_ih, b_hh = _weights(rng, gates, 12, 10, None, None)
    x = rng.standard_normal((8, 3, 12)).astype(np.float32)
    dense_out, _ = dense_cls(w_ih, w_hh, b_ih, b_hh)(x)
    full = low_cls.from_dense(w_ih, w_hh, b_ih, b_hh, ranks=(12, 10))
    assert full.ranks == (12, 10)
    np.testing.assert_allclose(full(x)[0], dense_out, rtol=1e-4, atol=2e-5)
    half = low_cls.from_dense(w_ih, w_hh, b_ih, b_hh, ranks=(4, None))
    assert half.ranks == (4, None) and half.rank_choices[1] is None
    by_energy = low_cls.from_dense(w_ih, w_hh, b_ih, b_hh, energy=0.9)
    assert all(c.rank == r for c, r in zip(by_energy.rank_choices, by_energy.ranks))
    assert by_energy.num_params() < dense_cls(w_ih, w_hh, b_ih, b_hh).num_params() + 1e9
    # calibration: W_ih fitted to these inputs, W_hh to the dense layer's own hidden states
    with pytest.warns(Warning):
        cal = low_cls.from_dense(w_ih, w_hh, b_ih, b_hh, rank=5, calibration=x)
    assert cal.ranks == (5, 5)
    assert cal(x)[0].shape == dense_out.shape


def test_core_checks_its_own_arguments(rng):
    """The private cores check shapes themselves: a direct call cannot read out of bounds."""
    core = lrkernels._core._RecurrentCore(
        "lstm", np.zeros((8, 3), np.float32), np.zeros((8, 2), np.float32), None, None
    )
    with pytest.raises(ValueError, match=r"\(seq, batch, 3\)"):
        core.run(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="h0 must have shape"):
        core.run(np.zeros((4, 2, 3), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="c0 must have shape"):
        core.run(np.zeros((4, 2, 3), np.float32), None, np.zeros((2, 3), np.float32))
    gru = lrkernels._core._RecurrentCore(
        "gru", np.zeros((6, 3), np.float32), np.zeros((6, 2), np.float32), None, None
    )
    with pytest.raises(ValueError, match="no cell state"):
        gru.run(np.zeros((4, 2, 3), np.float32), None, np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="'lstm' or 'gru'"):
        lrkernels._core._RecurrentCore("rnn", np.zeros((6, 3)), np.zeros((6, 2)), None, None)
    with pytest.raises(ValueError, match="one dense matrix or a pair"):
        lrkernels._core._RecurrentCore("gru", [np.zeros((6, 1))] * 3, np.zeros((6, 2)), None, None)
    table = lrkernels._core._EmbeddingCore(np.zeros((5, 4), np.float32))
    with pytest.raises(TypeError, match="int32 or int64"):
        table.lookup(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        table.lookup(np.zeros(6, np.int64)[::2])
    with pytest.raises(ValueError, match="padding_idx=-2"):
        lrkernels._core._EmbeddingCore(np.zeros((5, 4), np.float32), -2)
