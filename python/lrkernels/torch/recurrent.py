"""Low-rank recurrent modules: ``LowRankLSTM`` and ``LowRankGRU``, drop-in for nn.LSTM / nn.GRU.

Each weight matrix of each layer and direction (W_ih (G*H, in), W_hh (G*H, H); G = 4 for the
LSTM's gates i, f, g, o, 3 for the GRU's r, z, n) is stored as two factors ``U`` (G*H, r) and
``V`` (r, in) (parameters ``weight_ih_l0_U``, ``weight_ih_l0_V``, ...; ``_reverse`` for the backward
direction), or as the dense matrix (``weight_ih_l0``) where its rank is None. Biases are torch's
(``bias_ih_l0``, ``bias_hh_l0``). ``forward`` returns exactly what nn.LSTM / nn.GRU return.

Training (autograd), tracing, float64 or non-CPU tensors: the gate math in torch ops, a loop over
time. Inference on CPU float32 tensors: one lrkernels recurrent layer per layer and direction (the
whole sequence in C++), packed from the current parameters and repacked when they change.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import lrkernels

from ._kernel_cache import KernelModule, plain_cpu

__all__ = ["LowRankGRU", "LowRankLSTM"]


def _positive_int(v, name):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def _rank_or_none(r, name):
    if r is None:
        return None
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"{name} must be a positive int or None (a dense matrix), got {r!r}")
    return r


def _rank_pair(rank):
    """An int, None or a pair (r_ih, r_hh) (each an int or None) -> (r_ih, r_hh)."""
    if rank is None or isinstance(rank, int):
        r = _rank_or_none(rank, "rank")
        return (r, r)
    try:
        r_ih, r_hh = rank
    except (TypeError, ValueError):
        raise TypeError(
            f"rank must be an int, None, a pair (r_ih, r_hh) or a list of such pairs (one per "
            f"layer and direction), got {rank!r}"
        ) from None
    return (_rank_or_none(r_ih, "rank (r_ih)"), _rank_or_none(r_hh, "rank (r_hh)"))


def _project(x, w, b):
    """x W^T + b with W dense or a pair (U, V) (applied as U (V x))."""
    if isinstance(w, tuple):
        return F.linear(F.linear(x, w[1]), w[0], b)
    return F.linear(x, w, b)


def _lstm_direction(x, w_ih, w_hh, b_ih, b_hh, h, c, reverse):
    """One LSTM layer, one direction, in torch ops: x (seq, batch, in) -> (out, h_n, c_n)."""
    xs = _project(x, w_ih, b_ih)
    outs = [None] * x.shape[0]
    for t in range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0]):
        i, f, g, o = (xs[t] + _project(h, w_hh, b_hh)).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs[t] = h
    return torch.stack(outs), h, c


def _gru_direction(x, w_ih, w_hh, b_ih, b_hh, h, c, reverse):
    """One GRU layer, one direction, in torch ops: x (seq, batch, in) -> (out, h_n, None)."""
    xs = _project(x, w_ih, b_ih)
    outs = [None] * x.shape[0]
    for t in range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0]):
        ir, iz, in_ = xs[t].chunk(3, -1)
        hr, hz, hn = _project(h, w_hh, b_hh).chunk(3, -1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        h = n + z * (h - n)  # (1 - z) n + z h
        outs[t] = h
    return torch.stack(outs), h, None


class _LowRankRNNBase(KernelModule):
    mode = ""  # "LSTM" / "GRU"
    gates = 0
    torch_class = None
    _direction = None

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        *,
        rank,
        proj_size=0,
    ):
        super().__init__()
        name = type(self).__name__
        if proj_size:
            raise ValueError(f"{name}: proj_size is not supported (got proj_size={proj_size!r})")
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.num_layers = _positive_int(num_layers, "num_layers")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool):
            raise TypeError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = 0
        D = 2 if self.bidirectional else 1
        n = self.num_layers * D
        if isinstance(rank, list):
            if len(rank) != n:
                raise ValueError(
                    f"rank as a list needs one (r_ih, r_hh) per layer and direction ({n}), "
                    f"got {len(rank)}"
                )
            ranks = [_rank_pair(r) for r in rank]
        else:
            ranks = [_rank_pair(rank)] * n
        self.rank = rank if not isinstance(rank, list) else [tuple(r) for r in ranks]
        self.ranks = ranks  # (r_ih, r_hh) per layer and direction, torch's order (layer * D + d)
        G, H = self.gates, self.hidden_size
        names, layout = [], []
        for k in range(self.num_layers):
            in_k = self.input_size if k == 0 else H * D
            for d in range(D):
                sfx = f"l{k}" + ("_reverse" if d else "")
                r_ih, r_hh = ranks[k * D + d]
                entry = {}
                for which, cols, r in (("ih", in_k, r_ih), ("hh", H, r_hh)):
                    base = f"weight_{which}_{sfx}"
                    if r is None:
                        self.register_parameter(base, nn.Parameter(torch.empty(G * H, cols)))
                        entry[which] = (base,)
                    else:
                        self.register_parameter(base + "_U", nn.Parameter(torch.empty(G * H, r)))
                        self.register_parameter(base + "_V", nn.Parameter(torch.empty(r, cols)))
                        entry[which] = (base + "_U", base + "_V")
                if self.bias:
                    for which in ("ih", "hh"):
                        self.register_parameter(
                            f"bias_{which}_{sfx}", nn.Parameter(torch.empty(G * H))
                        )
                    entry["bias"] = (f"bias_ih_{sfx}", f"bias_hh_{sfx}")
                else:
                    entry["bias"] = None
                layout.append(entry)
                names += [*entry["ih"], *entry["hh"], *(entry["bias"] or ())]
        self._layout = layout
        self._param_names = tuple(names)
        self.reset_parameters()

    def reset_parameters(self):
        """torch's initialization (uniform +-1/sqrt(H)) for dense matrices and biases; factors
        scaled so that U V has the same element variance (as LowRankLinear)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for entry in self._layout:
                for which in ("ih", "hh"):
                    names = entry[which]
                    if len(names) == 1:
                        getattr(self, names[0]).uniform_(-bound, bound)
                    else:
                        U, V = (getattr(self, n) for n in names)
                        V.uniform_(-bound, bound)
                        U.uniform_(-math.sqrt(3.0 / U.shape[1]), math.sqrt(3.0 / U.shape[1]))
                for n in entry["bias"] or ():
                    getattr(self, n).uniform_(-bound, bound)

    # -- the weights of one layer/direction --------------------------------------------------
    def _weights(self, index):
        """(w_ih, w_hh, b_ih, b_hh) of layer/direction ``index``: each weight a tensor or a
        (U, V) pair of tensors; biases None without bias."""
        entry = self._layout[index]
        w = []
        for which in ("ih", "hh"):
            ts = tuple(getattr(self, n) for n in entry[which])
            w.append(ts[0] if len(ts) == 1 else ts)
        b = (
            (None, None)
            if entry["bias"] is None
            else tuple(getattr(self, n) for n in entry["bias"])
        )
        return (*w, *b)

    def dense_weights(self, index):
        """(W_ih, W_hh) of layer/direction ``index`` (torch's order: layer * D + direction) as
        dense tensors (U @ V for a factorized matrix)."""
        w_ih, w_hh = self._weights(index)[:2]
        return tuple(w[0] @ w[1] if isinstance(w, tuple) else w for w in (w_ih, w_hh))

    def _build_kernels(self):
        cls = getattr(lrkernels, "LowRank" + self.mode, None)
        if cls is None:  # this lrkernels build has no recurrent layers: torch ops
            return None
        return self.to_layers()

    def to_layers(self):
        """The lrkernels layers (``lrkernels.LowRankLSTM`` / ``LowRankGRU``, float32, packed from
        the current parameters), one per layer and direction in torch's order (layer * D + d).
        The backward direction of a bidirectional module is the layer called with reverse=True."""
        cls = getattr(lrkernels, "LowRank" + self.mode)

        def arr(t):
            return t.detach().to("cpu", torch.float32).numpy()

        layers = []
        for index in range(len(self._layout)):
            w_ih, w_hh, b_ih, b_hh = self._weights(index)
            ws = [tuple(map(arr, w)) if isinstance(w, tuple) else arr(w) for w in (w_ih, w_hh)]
            bs = [None if b is None else arr(b) for b in (b_ih, b_hh)]
            layers.append(cls(*ws, *bs))
        return layers

    @classmethod
    def from_layers(cls, layers, *, bidirectional=False, batch_first=False, dropout=0.0):
        """The module of lrkernels recurrent layers (one per layer and direction, torch's order:
        layer * D + d, e.g. from ``to_layers``); the factors are copied."""
        layers = list(layers)
        D = 2 if bidirectional else 1
        kinds = {"LowRank" + cls.mode, cls.mode}
        if not layers or len(layers) % D:
            raise ValueError(f"{cls.__name__}.from_layers needs a multiple of {D} layers")
        for layer in layers:
            if type(layer).__name__ not in kinds:
                raise TypeError(
                    f"{cls.__name__}.from_layers needs lrkernels {' or '.join(sorted(kinds))} "
                    f"layers, got {type(layer).__name__}"
                )
        first = layers[0]
        has_bias = first.bias_ih is not None or first.bias_hh is not None
        m = cls(
            first.input_size,
            first.hidden_size,
            len(layers) // D,
            bias=has_bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            rank=[tuple(layer.ranks) for layer in layers],
        )
        with torch.no_grad():
            for index, layer in enumerate(layers):
                entry = m._layout[index]
                for which, w in (("ih", layer.weight_ih), ("hh", layer.weight_hh)):
                    ts = w if isinstance(w, tuple) else (w,)
                    for n, t in zip(entry[which], ts):
                        getattr(m, n).copy_(torch.from_numpy(np.array(t, np.float32)))
                if entry["bias"] is not None:
                    G, H = m.gates, m.hidden_size
                    for n, b in zip(entry["bias"], (layer.bias_ih, layer.bias_hh)):
                        b = np.zeros(G * H, np.float32) if b is None else np.array(b, np.float32)
                        getattr(m, n).copy_(torch.from_numpy(b))
        return m

    # -- forward -----------------------------------------------------------------------------
    def _check_state(self, t, what, batched, batch, x):
        n = self.num_layers * (2 if self.bidirectional else 1)
        want = (n, batch, self.hidden_size) if batched else (n, self.hidden_size)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what} must be a tensor, got {type(t).__name__}")
        if tuple(t.shape) != want:
            raise ValueError(
                f"{type(self).__name__}: {what} must have shape {want} for input of shape "
                f"{tuple(x.shape)}, got {tuple(t.shape)}"
            )
        return t if batched else t.unsqueeze(1)

    def _states(self, state, batched, batch, x):
        """(h0, c0) as (L*D, batch, H) tensors (c0 None for the GRU; None where not given)."""
        if state is None:
            return None, None
        if self.mode == "LSTM":
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError("LowRankLSTM: state must be a pair (h_0, c_0) of tensors or None")
            return (
                self._check_state(state[0], "h_0", batched, batch, x),
                self._check_state(state[1], "c_0", batched, batch, x),
            )
        return self._check_state(state, "h_0", batched, batch, x), None

    def forward(self, input, hx=None):  # noqa: A002 - torch's argument names, for hx=
        x, state = input, hx
        name = type(self).__name__
        if isinstance(x, PackedSequence):
            raise TypeError(
                f"{name} does not take a PackedSequence: pass a padded tensor (the fused path "
                "runs every sequence to the full length)"
            )
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} input must be a tensor, got {type(x).__name__}")
        if x.ndim not in (2, 3):
            raise ValueError(
                f"{name} expects input of shape (seq, batch, input_size), (batch, seq, "
                f"input_size) with batch_first, or (seq, input_size) unbatched; got "
                f"{tuple(x.shape)}"
            )
        batched = x.ndim == 3
        xs = x if not batched else (x.transpose(0, 1) if self.batch_first else x)
        if not batched:
            xs = x.unsqueeze(1)
        seq, batch, features = xs.shape
        if features != self.input_size:
            raise ValueError(
                f"{name} expects input_size={self.input_size} features (the last axis), got "
                f"input of shape {tuple(x.shape)}"
            )
        if seq == 0:
            raise ValueError(f"{name}: the sequence length must be > 0, got input {tuple(x.shape)}")
        h0, c0 = self._states(state, batched, batch, x)
        D = 2 if self.bidirectional else 1
        fused = None
        if (
            plain_cpu(x)
            and (h0 is None or plain_cpu(h0))
            and (c0 is None or plain_cpu(c0))
            and not (self.training and self.dropout > 0 and self.num_layers > 1)
        ):
            fused = self._kernels_for_call()
        if fused is not None:
            out, h_n, c_n = self._forward_fused(fused, xs, h0, c0, D)
        else:
            out, h_n, c_n = self._forward_torch(xs, h0, c0, D, batch)
        if not batched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return (out, (h_n, c_n)) if self.mode == "LSTM" else (out, h_n)

    def _forward_torch(self, xs, h0, c0, D, batch):
        n = self.num_layers * D
        if h0 is None:
            h0 = xs.new_zeros(n, batch, self.hidden_size)
        if c0 is None and self.mode == "LSTM":
            c0 = xs.new_zeros(n, batch, self.hidden_size)
        step = _lstm_direction if self.mode == "LSTM" else _gru_direction
        layer_in, hs, cs = xs, [], []
        for k in range(self.num_layers):
            outs = []
            for d in range(D):
                index = k * D + d
                c_init = None if c0 is None else c0[index]
                o, h, c = step(layer_in, *self._weights(index), h0[index], c_init, bool(d))
                outs.append(o)
                hs.append(h)
                cs.append(c)
            layer_in = outs[0] if D == 1 else torch.cat(outs, -1)
            if self.training and self.dropout > 0 and k < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        c_n = torch.stack(cs) if self.mode == "LSTM" else None
        return layer_in, torch.stack(hs), c_n

    def _forward_fused(self, layers, xs, h0, c0, D):
        layer_in = np.ascontiguousarray(xs.numpy())
        h0 = None if h0 is None else h0.numpy()
        c0 = None if c0 is None else c0.numpy()
        hs, cs = [], []
        for k in range(self.num_layers):
            outs = []
            for d in range(D):
                index = k * D + d
                if self.mode == "LSTM":
                    state = None
                    if h0 is not None or c0 is not None:
                        z = np.zeros(h0.shape[1:] if h0 is not None else c0.shape[1:], np.float32)
                        state = (
                            z if h0 is None else np.ascontiguousarray(h0[index]),
                            z if c0 is None else np.ascontiguousarray(c0[index]),
                        )
                    o, (h, c) = layers[index](layer_in, state, reverse=bool(d))
                    cs.append(c)
                else:
                    state = None if h0 is None else np.ascontiguousarray(h0[index])
                    o, h = layers[index](layer_in, state, reverse=bool(d))
                outs.append(o)
                hs.append(h)
            layer_in = outs[0] if D == 1 else np.concatenate(outs, -1)
        h_n = torch.from_numpy(np.concatenate(hs))
        c_n = torch.from_numpy(np.concatenate(cs)) if self.mode == "LSTM" else None
        return torch.from_numpy(layer_in), h_n, c_n

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + f", rank={self.rank!r}"

    # -- from a dense torch module -----------------------------------------------------------
    @classmethod
    def _from_torch(cls, rnn, criterion):
        from .convert import factorize_rnn

        return factorize_rnn(rnn, layer_class=cls, **criterion)

    def _layer_outputs(self, xs):
        """Torch ops, no dropout, zero initial state: per layer k, (input of layer k (seq, batch,
        in_k), [output of direction d (seq, batch, H)]) for xs (seq, batch, input_size)."""
        D = 2 if self.bidirectional else 1
        step = _lstm_direction if self.mode == "LSTM" else _gru_direction
        result, layer_in = [], xs
        z = xs.new_zeros(xs.shape[1], self.hidden_size)
        for k in range(self.num_layers):
            outs = [step(layer_in, *self._weights(k * D + d), z, z, bool(d))[0] for d in range(D)]
            result.append((layer_in, outs))
            layer_in = outs[0] if D == 1 else torch.cat(outs, -1)
        return result


class LowRankLSTM(_LowRankRNNBase):
    """nn.LSTM with low-rank weight matrices (see the module docstring).

    ``LowRankLSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, *, rank)``: rank an int (both matrices), a pair (r_ih, r_hh)
    (None keeps that matrix dense), None (both dense) or a list of pairs, one per layer and
    direction. ``forward(x, state=None)`` -> (output, (h_n, c_n)) as nn.LSTM.
    ``from_lstm(nn.LSTM, rank= | ranks= | energy= | ratio= | vbmf=True, calibration=None)``,
    ``to_layers()``, ``from_layers(layers, ...)``. proj_size and PackedSequence are not supported.
    """

    mode = "LSTM"
    gates = 4
    torch_class = nn.LSTM

    @classmethod
    def from_lstm(cls, lstm, **criterion):
        """Factorize every layer/direction's W_ih and W_hh of an nn.LSTM by one criterion
        (rank=r or (r_ih, r_hh), ranks= the same, energy=, ratio=, vbmf=True; a rank of None keeps
        that matrix dense), each matrix by ``lrkernels.decompose.linear_factors`` (the machinery
        of ``lrkernels.LowRankLinear.from_dense``). calibration: input sequences (a tensor in the
        module's layout, or a list of them): W_ih of layer 0 is fitted to them, W_ih of later
        layers and every W_hh to the dense model's own hidden states on them."""
        return cls._from_torch(lstm, criterion)


class LowRankGRU(_LowRankRNNBase):
    """nn.GRU with low-rank weight matrices (see the module docstring); the same constructor and
    conventions as ``LowRankLSTM``. ``forward(x, h_0=None)`` -> (output, h_n) as nn.GRU.
    ``from_gru(nn.GRU, rank= | ranks= | energy= | ratio= | vbmf=True, calibration=None)``."""

    mode = "GRU"
    gates = 3
    torch_class = nn.GRU

    @classmethod
    def from_gru(cls, gru, **criterion):
        """As ``LowRankLSTM.from_lstm``, for an nn.GRU."""
        return cls._from_torch(gru, criterion)
