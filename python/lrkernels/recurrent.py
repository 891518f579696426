"""Recurrent layers on the fused kernels: LSTM and GRU, dense or with low-rank weight matrices.

Torch's conventions, so that ``nn.LSTM``/``nn.GRU`` weights map directly: gates stacked i, f, g, o
(LSTM) and r, z, n (GRU); weight_ih (G*H, input_size), weight_hh (G*H, H), bias_ih and bias_hh
(G*H,); input (seq, batch, input_size), or (batch, seq, input_size) with batch_first, or
(seq, input_size) unbatched; ``output, (h_n, c_n) = lstm(x, state)``, ``output, h_n = gru(x, h0)``.

One object is one layer in one direction. A call runs the whole sequence in C++ with the GIL
released: the input projections of a block of time steps as one (low-rank) GEMM, then per step
the recurrent projection, the gate nonlinearities and the state update, with no return to Python
and no allocation per step. ``reverse=True`` runs the sequence backwards (the second half of a
bidirectional layer). Stacks of layers and bidirectional layers are ``lrkernels.torch``'s
``LowRankLSTM``/``LowRankGRU``, which compose these.

In a low-rank layer each stacked matrix is a pair (U, V): U (G*H, r), V (r, in), so the gates of a
matrix share one V; either matrix may be left dense.
"""

from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["LSTM", "GRU", "LowRankLSTM", "LowRankGRU"]


def _float_matrix(a, what):
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        raise TypeError(f"{what} must have a real floating-point dtype, got {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D, got shape {arr.shape}")
    return arr


def _matrix_arg(w, what, low_rank_allowed):
    """An array (dense) or a pair (U, V), as the core takes it."""
    if isinstance(w, (tuple, list)):
        if not low_rank_allowed:
            raise TypeError(f"{what} of a dense layer must be one array, got a {type(w).__name__}")
        if len(w) != 2:
            raise ValueError(f"{what} must be an array or a pair (U, V), got {len(w)} items")
        return [_float_matrix(w[0], what + " U"), _float_matrix(w[1], what + " V")]
    return _float_matrix(w, what)


class _Recurrent:
    _cell = ""
    _gates = 0
    _low_rank = False

    def __init__(self, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, batch_first=False):
        ih = _matrix_arg(weight_ih, "weight_ih", self._low_rank)
        hh = _matrix_arg(weight_hh, "weight_hh", self._low_rank)
        self._core = _core._RecurrentCore(self._cell, ih, hh, bias_ih, bias_hh)
        self.batch_first = bool(batch_first)

    # ---- what the layer holds ----
    @property
    def input_size(self) -> int:
        return self._core.input_size

    @property
    def hidden_size(self) -> int:
        return self._core.hidden_size

    @property
    def weight_ih(self):
        """weight_ih as given: a read-only array, or a tuple (U, V) of read-only arrays."""
        return self._core.weight_ih

    @property
    def weight_hh(self):
        return self._core.weight_hh

    @property
    def bias_ih(self):
        return self._core.bias_ih

    @property
    def bias_hh(self):
        return self._core.bias_hh

    @property
    def ranks(self) -> tuple:
        """(r_ih, r_hh): the rank of each matrix, None where it is dense."""
        return tuple(
            w[0].shape[1] if isinstance(w, tuple) else None
            for w in (self.weight_ih, self.weight_hh)
        )

    def dense_weights(self):
        """(W_ih, W_hh) as dense float32 arrays (U @ V for a factored matrix)."""
        return tuple(
            (w[0] @ w[1]).astype(np.float32) if isinstance(w, tuple) else np.array(w)
            for w in (self.weight_ih, self.weight_hh)
        )

    def num_params(self) -> int:
        """Weights and biases stored (factors counted as stored)."""
        n = 0
        for w in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            for f in w if isinstance(w, tuple) else () if w is None else (w,):
                n += f.size
        return n

    def __repr__(self):
        ranks = ""
        if self._low_rank:
            ranks = ", ranks=" + str(self.ranks)
        return (
            f"{type(self).__name__}(input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}{ranks}, batch_first={self.batch_first})"
        )

    # ---- calls ----
    def _state(self, value, name, batch, unbatched):
        if value is None:
            return None
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            raise TypeError(f"{name} must have a real floating-point dtype, got {arr.dtype}")
        H = self.hidden_size
        want = [(H,), (1, H)] if unbatched else [(batch, H), (1, batch, H)]
        if arr.shape not in want:
            raise ValueError(
                f"{name} must have shape {' or '.join(map(str, want))}, got shape {arr.shape}"
            )
        return np.ascontiguousarray(arr.reshape(batch, H), dtype=np.float32)

    def _run(self, x, h0, c0, reverse):
        arr = np.asarray(x)
        if arr.dtype.kind != "f":
            raise TypeError(f"x must have a real floating-point dtype, got {arr.dtype}")
        in_size = self.input_size
        if arr.ndim not in (2, 3) or arr.shape[-1] != in_size:
            layout = "(batch, seq, " if self.batch_first else "(seq, batch, "
            raise ValueError(
                f"{type(self).__name__} expects x of shape {layout}{in_size}) or (seq, {in_size}) "
                f"(input_size={in_size}), got shape {arr.shape}"
            )
        unbatched = arr.ndim == 2
        if unbatched:
            arr = arr[:, None, :]
        elif self.batch_first:
            arr = arr.transpose(1, 0, 2)
        batch = arr.shape[1]
        h0 = self._state(h0, "h0", batch, unbatched)
        c0 = self._state(c0, "c0", batch, unbatched)
        out, h_n, c_n = self._core.run(
            np.ascontiguousarray(arr, dtype=np.float32), h0, c0, bool(reverse)
        )
        if unbatched:
            out = out[:, 0, :]
        elif self.batch_first:
            out = np.ascontiguousarray(out.transpose(1, 0, 2))
        H = self.hidden_size
        shape = (1, H) if unbatched else (1, batch, H)
        return out, h_n.reshape(shape), None if c_n is None else c_n.reshape(shape)


def _calibration_sequences(calibration, input_size):
    """A list of float32 (seq, batch, input_size) arrays from an array or a list of arrays
    (2-D arrays are unbatched sequences)."""
    if calibration is None:
        return []
    items = calibration if isinstance(calibration, (list, tuple)) else [calibration]
    out = []
    for x in items:
        a = np.asarray(x, dtype=np.float32)
        if a.ndim == 2:
            a = a[:, None, :]
        if a.ndim != 3 or a.shape[-1] != input_size:
            raise ValueError(
                f"calibration sequences must have shape (seq, batch, {input_size}) or "
                f"(seq, {input_size}), got shape {a.shape}"
            )
        out.append(a)
    return out


def _low_rank_from_dense(
    cls,
    weight_ih,
    weight_hh,
    bias_ih=None,
    bias_hh=None,
    *,
    rank=None,
    ranks=None,
    energy=None,
    ratio=None,
    calibration=None,
    reg="auto",
    batch_first=False,
):
    """LowRankLSTM (G = 4) / LowRankGRU (G = 3) from torch-shaped dense weights: weight_ih
    (G*H, input_size), weight_hh (G*H, H), bias_ih and bias_hh (G*H,) or None, by exactly
    one criterion per matrix: rank=r (both matrices), ranks=(r_ih, r_hh) (None keeps that
    matrix dense), energy=e or ratio=q (each matrix by itself, as
    ``LowRankLinear.from_dense``). calibration: input sequences (seq, batch, input_size) (an
    array or a list): W_ih is fitted to those inputs, W_hh to the hidden states the dense
    layer computes from them (data-aware truncated SVD; reg as in
    ``LowRankLinear.from_dense``). The rank choices are in ``layer.rank_choices`` (None for
    a dense matrix)."""
    from .decompose.criteria import linear_factors

    W_ih = _float_matrix(weight_ih, "weight_ih")
    W_hh = _float_matrix(weight_hh, "weight_hh")
    given = [
        k
        for k, v in (("rank", rank), ("ranks", ranks), ("energy", energy), ("ratio", ratio))
        if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            f"{cls.__name__}.from_dense takes exactly one of rank=, ranks=, energy=, ratio=; "
            f"got {', '.join(given) or 'none'}"
        )
    if given[0] == "ranks":
        if not isinstance(ranks, (tuple, list)) or len(ranks) != 2:
            raise ValueError(f"ranks must be a pair (r_ih, r_hh), got {ranks!r}")
        per = [{"rank": r} for r in ranks]
    elif given[0] == "rank":
        per = [{"rank": rank}, {"rank": rank}]
    else:
        value = {"energy": energy, "ratio": ratio}[given[0]]
        per = [{given[0]: value}, {given[0]: value}]
    # The dense layer gives the calibration of W_hh: the hidden states the layer itself sees.
    dense = cls._dense_class(W_ih, W_hh, bias_ih, bias_hh)
    xs = _calibration_sequences(calibration, W_ih.shape[1])
    cal_ih = cal_hh = None
    if xs:
        cal_ih = np.concatenate([x.reshape(-1, x.shape[-1]) for x in xs])
        states = []
        for x in xs:
            out = dense._run(x, None, None, False)[0]
            prev = np.concatenate([np.zeros((1,) + out.shape[1:], np.float32), out[:-1]])
            states.append(prev.reshape(-1, out.shape[-1]))
        cal_hh = np.concatenate(states)
    parts, choices = [], []
    for W, crit, cal in ((W_ih, per[0], cal_ih), (W_hh, per[1], cal_hh)):
        if "rank" in crit and crit["rank"] is None:
            parts.append(W)
            choices.append(None)
            continue
        U, V, choice = linear_factors(W, **crit, calibration=cal, reg=reg)
        parts.append((U, V))
        choices.append(choice)
    layer = cls(parts[0], parts[1], bias_ih, bias_hh, batch_first=batch_first)
    layer.rank_choices = tuple(choices)
    return layer


class LSTM(_Recurrent):
    """Dense LSTM layer (one layer, one direction) on the same engine as LowRankLSTM: the baseline.

    LSTM(weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, batch_first=False) with torch's
    shapes (4H, input_size), (4H, H), (4H,). ``output, (h_n, c_n) = layer(x, state=None, *,
    reverse=False)``: see ``lrkernels.recurrent``.
    """

    _cell, _gates = "lstm", 4

    def __call__(self, x, state=None, *, reverse=False):
        """output, (h_n, c_n) for x (seq, batch, input_size) [(batch, seq, ...) batch_first;
        (seq, input_size) unbatched]; state (h0, c0) of shape (1, batch, H) or (batch, H), or
        None (zeros). h_n and c_n are (1, batch, H) ((1, H) unbatched), as torch returns them."""
        h0 = c0 = None
        if state is not None:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError("an LSTM state is a pair (h0, c0)")
            h0, c0 = state
        out, h_n, c_n = self._run(x, h0, c0, reverse)
        return out, (h_n, c_n)


class GRU(_Recurrent):
    """Dense GRU layer (one layer, one direction) on the same engine as LowRankGRU: the baseline.

    GRU(weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, batch_first=False) with torch's
    shapes (3H, input_size), (3H, H), (3H,). ``output, h_n = layer(x, h0=None, *,
    reverse=False)``.
    """

    _cell, _gates = "gru", 3

    def __call__(self, x, state=None, *, reverse=False):
        """output, h_n for x (seq, batch, input_size) [(batch, seq, ...) batch_first;
        (seq, input_size) unbatched]; state h0 of shape (1, batch, H) or (batch, H), or None."""
        if isinstance(state, (tuple, list)):
            raise TypeError("a GRU state is one array h0, not a pair")
        out, h_n, _ = self._run(x, state, None, reverse)
        return out, h_n


class LowRankLSTM(LSTM):
    """LSTM layer with low-rank weight matrices: weight_ih = U_ih V_ih and weight_hh = U_hh V_hh
    (either may be a dense array instead), run as one fused call per sequence.

    LowRankLSTM((U_ih, V_ih), (U_hh, V_hh), bias_ih=None, bias_hh=None, *, batch_first=False):
    U (4H, r), V (r, input_size or H). ``from_dense`` factorizes torch-shaped weights.
    """

    _low_rank = True

    from_dense = classmethod(_low_rank_from_dense)


class LowRankGRU(GRU):
    """GRU layer with low-rank weight matrices (see LowRankLSTM; U (3H, r))."""

    _low_rank = True

    from_dense = classmethod(_low_rank_from_dense)


_low_rank_from_dense.__name__ = _low_rank_from_dense.__qualname__ = "from_dense"
LSTM._dense_class = LSTM  # inherited by LowRankLSTM: its calibration runs the dense layer
GRU._dense_class = GRU
