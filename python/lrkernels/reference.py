"""Numpy reference implementations of every lrkernels kernel: written for clarity, not speed.

They compute in float64 and are the oracle the tests compare the fast kernels with. Names and
arguments match the layers: ``lowrank_linear(x, U, V, bias)`` is ``LowRankLinear(U, V, bias)(x)``,
and ``activation=`` is the layers' fused output clamp (None, "relu", "relu6" or (min, max)).
"""

from __future__ import annotations

import operator

import numpy as np

_ACTIVATION_WORDS = 'None, "relu", "relu6" or a pair (min, max) of floats or None'


def output_bounds(activation):
    """The (min, max) output clamp of an ``activation=`` value, as the layers store it: float32
    values as Python floats, (-inf, inf) for None. "relu" is (0, inf), "relu6" (0, 6), a pair
    (min, max) is hardtanh / clamp with None for an open side. ValueError / TypeError naming the
    value otherwise (a NaN bound, min > max, an unknown name, a wrong type)."""
    inf = float("inf")
    if activation is None:
        return -inf, inf
    if isinstance(activation, str):
        named = {"relu": (0.0, inf), "relu6": (0.0, 6.0)}
        if activation not in named:
            raise ValueError(
                f"unknown activation {activation!r}; the activations are {_ACTIVATION_WORDS}"
            )
        return named[activation]
    if not isinstance(activation, (tuple, list)):
        raise TypeError(f"activation must be {_ACTIVATION_WORDS}, got {activation!r}")
    if len(activation) != 2:
        raise ValueError(f"activation must be {_ACTIVATION_WORDS}, got {activation!r}")

    def bound(v, open_side):
        if v is None:
            return open_side
        if isinstance(v, (bool, np.bool_, str, bytes)):
            raise TypeError(f"activation must be {_ACTIVATION_WORDS}, got {activation!r}")
        try:
            f = float(v)
        except TypeError:
            raise TypeError(f"activation must be {_ACTIVATION_WORDS}, got {activation!r}") from None
        with np.errstate(over="ignore"):
            return float(np.float32(f))  # beyond the float32 range: +-inf, as the layers

    lo, hi = bound(activation[0], -inf), bound(activation[1], inf)
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError(f"activation={activation!r}: the output bounds must not be NaN")
    if lo > hi:
        raise ValueError(f"activation={activation!r}: output_min must be <= output_max")
    return lo, hi


def clamp_output(y, activation=None):
    """y clamped to the bounds of `activation` (see output_bounds), as the layers' last stage does:
    x < min -> min, x > max -> max, anything else (NaN, -0.0 under a bound of 0) unchanged."""
    lo, hi = output_bounds(activation)
    if lo == -np.inf and hi == np.inf:
        return y
    y = np.where(y < lo, lo, y)
    return np.where(y > hi, hi, y)


def linear(x, W, bias=None, *, activation=None):
    """y = x W^T + bias for x of shape (in,) or (batch, in) and W of shape (out, in), then the
    output clamp of `activation` (None, "relu", "relu6" or (min, max): see output_bounds)."""
    x = np.asarray(x, dtype=np.float64)
    y = x @ np.asarray(W, dtype=np.float64).T
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return clamp_output(y, activation)


def lowrank_linear(x, U, V, bias=None, *, activation=None):
    """y = U (V x) + bias, for U (out, rank) and V (rank, in): the two stages one after another,
    then the output clamp of `activation` (only the output is clamped, never V x)."""
    x = np.asarray(x, dtype=np.float64)
    t = x @ np.asarray(V, dtype=np.float64).T  # (..., rank)
    y = t @ np.asarray(U, dtype=np.float64).T  # (..., out)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return clamp_output(y, activation)


# --------------------------------------------------------------------------------------------
# 2-D convolution
# --------------------------------------------------------------------------------------------

_LAYOUTS = ("NCHW", "NHWC")


def _pair(value, name, minimum):
    """An int or a pair of ints -> (a, b) of Python ints, each >= minimum (ValueError otherwise)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    try:
        pair = (operator.index(value),) * 2
    except TypeError:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
        if len(items) != 2 or any(isinstance(v, (bool, np.bool_)) for v in items):
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
        try:
            pair = tuple(operator.index(v) for v in items)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum} in both axes, got {value!r}")
    return pair


def _float64(a, name):
    """a as a float64 ndarray; complex, bool and non-numeric data are refused (TypeError)."""
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    return a.astype(np.float64)


def _to_nchw(x, layout):
    """x as float64 (N, C, H, W), checking the layout name and the number of dimensions."""
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    x = _float64(x, "x")
    if x.ndim != 4:
        raise ValueError(f"x must have 4 dimensions ({layout}), got shape {x.shape}")
    return x if layout == "NCHW" else x.transpose(0, 3, 1, 2)


def _from_nchw(y, layout):
    return y if layout == "NCHW" else y.transpose(0, 2, 3, 1)


def _check_bias(bias, out_channels):
    if bias is None:
        return None
    bias = _float64(bias, "bias")
    if bias.shape != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got shape {bias.shape}")
    return bias


def output_size(size, kernel, stride, padding, dilation):
    """The output length of one axis: (size + 2 padding - dilation (kernel - 1) - 1) // stride + 1.

    Returns 0 when the dilated kernel does not fit in the padded input (no output position).
    """
    span = dilation * (kernel - 1) + 1
    if size + 2 * padding < span:
        return 0
    return (size + 2 * padding - span) // stride + 1


def _output_hw(hw, kernel, stride, padding, dilation, refusal):
    """(Ho, Wo) of images of size hw = (H, W) under the pairs kernel, stride, padding, dilation.

    When either is < 1: ValueError with the message `refusal(ho, wo)` followed by the stride,
    padding and dilation.
    """
    ho, wo = (output_size(*axis) for axis in zip(hw, kernel, stride, padding, dilation))
    if ho < 1 or wo < 1:
        raise ValueError(
            f"{refusal(ho, wo)}, stride {stride}, padding {padding}, dilation {dilation}"
        )
    return ho, wo


def _image_output_hw(x, kernel, stride, padding, dilation, what):
    """_output_hw of the float64 NCHW images x; `what` (the weight or kernel) in the message."""
    return _output_hw(
        x.shape[2:],
        kernel,
        stride,
        padding,
        dilation,
        lambda ho, wo: (
            f"output size would be ({ho}, {wo}) < 1: input (N, C, H, W) = {x.shape}, {what}"
        ),
    )


def _taps(start, stride, count):
    """The slice of `count` input positions start, start + stride, ... along one axis."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def _windows(xp, kernel, stride, dilation, out_hw):
    """(ky, kx, window) for every tap of the kernel over the padded images xp (..., Hp, Wp):
    window[..., i, j] = xp[..., i*sh + ky*dh, j*sw + kx*dw] for i < Ho, j < Wo."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    for ky in range(kh):
        for kx in range(kw):
            yield ky, kx, xp[..., _taps(ky * dh, sh, ho), _taps(kx * dw, sw, wo)]


def _conv2d_nchw(x, w, stride, padding, dilation):
    """The convolution itself on float64 (N, Cin, H, W) and (Cout, Cin, kh, kw), no bias."""
    n = x.shape[0]
    cout, _, kh, kw = w.shape
    (ph, pw) = padding
    ho, wo = _image_output_hw(x, (kh, kw), stride, padding, dilation, f"weight {w.shape}")
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # explicit zero padding
    y = np.zeros((n, cout, ho, wo))
    for ky, kx, patch in _windows(xp, (kh, kw), stride, dilation, (ho, wo)):  # (N, Cin, Ho, Wo)
        y += np.einsum("nchw,oc->nohw", patch, w[:, :, ky, kx], optimize=True)
    return y


def _factor(a, name, form):
    """A factor as a float64 array of the shape `form` (e.g. "(R, Cin)": its rank), non-empty."""
    a = _float64(a, name)
    if a.ndim != form.count(",") + 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty {form} array, got {a.shape}")
    return a


def _factors(*factors):
    """Each of the (array, name, form) triples checked by _factor."""
    return [_factor(*f) for f in factors]


def _conv_input(x, layout, stride, padding, dilation):
    """A convolution's checked input and geometry: (x as float64 NCHW, (stride, padding,
    dilation) as pairs)."""
    geometry = (
        _pair(stride, "stride", 1),
        _pair(padding, "padding", 0),
        _pair(dilation, "dilation", 1),
    )
    return _to_nchw(x, layout), geometry


def _conv_result(y, bias, layout, activation=None):
    """The float64 NCHW result y plus the bias (or None), clamped by `activation`, in `layout`."""
    if bias is not None:
        y = y + bias[None, :, None, None]
    y = clamp_output(y, activation)
    return _from_nchw(y, layout)


def _check_channels(x, layout, w, name):
    """x (NCHW) has the channels w (shape (..., Cin, ...), Cin its second axis) expects."""
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} channels ({layout} shape {_from_nchw(x, layout).shape}), "
            f"{name} {w.shape} expects {w.shape[1]}"
        )


def conv2d(
    x, weight, bias=None, stride=1, padding=0, dilation=1, layout="NCHW", *, activation=None
):
    """Dense 2-D convolution (cross-correlation, groups=1) like ``torch.nn.functional.conv2d``.

    ``conv2d(x, weight, bias, stride, padding, dilation, layout)`` is
    ``Conv2d(weight, bias, stride=..., padding=..., dilation=..., layout=...)(x)``, in float64:

        y[n, o, i, j] = bias[o] + sum_{c, ky, kx} weight[o, c, ky, kx]
                        * xpad[n, c, i*sh + ky*dh, j*sw + kx*dw]

    where xpad is x with ph zero rows above and below and pw zero columns left and right.

    x: (N, Cin, H, W) for layout "NCHW", (N, H, W, Cin) for "NHWC". weight: (Cout, Cin, kh, kw).
    bias: (Cout,) or None. stride, padding, dilation: an int or a pair (for the H and W axes);
    stride and dilation >= 1, padding >= 0. Returns float64 (N, Cout, Ho, Wo) or (N, Ho, Wo, Cout)
    with Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1 (Wo likewise), which must be >= 1.
    activation (keyword-only): the output clamp after the bias (None, "relu", "relu6" or
    (min, max); see output_bounds).
    """
    x, (stride, padding, dilation) = _conv_input(x, layout, stride, padding, dilation)
    w = _factor(weight, "weight", "(Cout, Cin, kh, kw)")
    _check_channels(x, layout, w, "weight")
    bias = _check_bias(bias, w.shape[0])
    y = _conv2d_nchw(x, w, stride, padding, dilation)
    return _conv_result(y, bias, layout, activation)


def tucker_conv2d(
    x,
    first,
    core,
    last,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    *,
    activation=None,
):
    """Tucker-2 factorized convolution: three convolutions one after the other, in float64.

    ``tucker_conv2d(x, first, core, last, bias, ...)`` is
    ``TuckerConv2d(first, core, last, bias, ...)(x)``:

        t = conv2d(x, first[:, :, None, None])                        1x1, Cin -> R_in
        u = conv2d(t, core, stride=..., padding=..., dilation=...)    kh x kw, R_in -> R_out
        y = conv2d(u, last[:, :, None, None]) + bias                  1x1, R_out -> Cout

    The zero padding of the middle stage pads t (the 1x1 output); as `first` has no bias this
    equals one dense convolution of x with the weight sum_{s, r} last[o, s] core[s, r] first[r, c].

    first: (R_in, Cin); core: (R_out, R_in, kh, kw); last: (Cout, R_out); bias: (Cout,) or None.
    x, stride, padding, dilation, layout and the result as in `conv2d`.
    """
    x, (stride, padding, dilation) = _conv_input(x, layout, stride, padding, dilation)
    first, core, last = _factors(
        (first, "first", "(R_in, Cin)"),
        (core, "core", "(R_out, R_in, kh, kw)"),
        (last, "last", "(Cout, R_out)"),
    )
    if core.shape[1] != first.shape[0]:
        raise ValueError(
            f"rank mismatch: first {first.shape} has R_in={first.shape[0]}, "
            f"core {core.shape} expects R_in={core.shape[1]}"
        )
    if last.shape[1] != core.shape[0]:
        raise ValueError(
            f"rank mismatch: core {core.shape} has R_out={core.shape[0]}, "
            f"last {last.shape} expects R_out={last.shape[1]}"
        )
    _check_channels(x, layout, first, "first")
    bias = _check_bias(bias, last.shape[0])
    # The 1x1 stages are per-pixel channel mixes (valid on an empty image too, which the middle
    # stage's padding may still turn into a non-empty output).
    t = np.einsum("rc,nchw->nrhw", first, x)
    u = _conv2d_nchw(t, core, stride, padding, dilation)
    y = np.einsum("or,nrhw->nohw", last, u)
    return _conv_result(y, bias, layout, activation)


def cp_conv2d(
    x,
    first,
    vertical,
    horizontal,
    last,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    *,
    activation=None,
):
    """CP-factorized convolution (Lebedev et al. 2015): four stages one after the other, float64.

    ``cp_conv2d(x, first, vertical, horizontal, last, bias, ...)`` is
    ``CPConv2d(first, vertical, horizontal, last, bias, ...)(x)``:

        t[n, r, h, w] = sum_c first[r, c] x[n, c, h, w]                         1x1, Cin -> R
        u[n, r, i, w] = sum_y vertical[r, y] tpad[n, r, i*sh + y*dh, w]          kh x 1 depthwise
        v[n, r, i, j] = sum_x horizontal[r, x] upad[n, r, i, j*sw + x*dw]        1 x kw depthwise
        y[n, o, i, j] = bias[o] + sum_r last[o, r] v[n, r, i, j]                1x1, R -> Cout

    where tpad is t with ph zero rows above and below (the H axis: stride sh, padding ph,
    dilation dh) and upad is u with pw zero columns left and right (the W axis). As `first` has
    no bias this equals one dense convolution of x with the weight
    W[o, c, y, x] = sum_r last[o, r] vertical[r, y] horizontal[r, x] first[r, c].

    first: (R, Cin); vertical: (R, kh); horizontal: (R, kw); last: (Cout, R); bias: (Cout,) or
    None. x, stride, padding, dilation, layout and the result as in `conv2d`.
    """
    x, (stride, padding, dilation) = _conv_input(x, layout, stride, padding, dilation)
    first, vertical, horizontal, last = _factors(
        (first, "first", "(R, Cin)"),
        (vertical, "vertical", "(R, kh)"),
        (horizontal, "horizontal", "(R, kw)"),
        (last, "last", "(Cout, R)"),
    )
    r = first.shape[0]
    if vertical.shape[0] != r or horizontal.shape[0] != r or last.shape[1] != r:
        raise ValueError(
            f"rank mismatch: first {first.shape} is (R, Cin), vertical {vertical.shape} must be "
            f"(R, kh), horizontal {horizontal.shape} must be (R, kw), last {last.shape} must be "
            f"(Cout, R)"
        )
    _check_channels(x, layout, first, "first")
    bias = _check_bias(bias, last.shape[0])
    n, _, h, wd = x.shape
    kh, kw = vertical.shape[1], horizontal.shape[1]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = _image_output_hw(x, (kh, kw), stride, padding, dilation, f"kernel ({kh}, {kw})")
    t = np.einsum("nchw,rc->nrhw", x, first, optimize=True)  # (N, R, H, W)
    tp = np.pad(t, ((0, 0), (0, 0), (ph, ph), (0, 0)))
    u = np.zeros((n, r, ho, wd))
    for ky in range(kh):
        rows = tp[:, :, _taps(ky * dh, sh, ho), :]  # (N, R, Ho, W)
        u += rows * vertical[None, :, ky, None, None]
    up = np.pad(u, ((0, 0), (0, 0), (0, 0), (pw, pw)))
    v = np.zeros((n, r, ho, wo))
    for kx in range(kw):
        cols = up[:, :, :, _taps(kx * dw, sw, wo)]  # (N, R, Ho, Wo)
        v += cols * horizontal[None, :, kx, None, None]
    y = np.einsum("nrhw,or->nohw", v, last, optimize=True)
    return _conv_result(y, bias, layout, activation)


# ---- recurrent layers and embeddings ------------------------------------------------------------


def _matrix64(w, name):
    """A dense weight matrix (array) or a low-rank pair (U, V), in float64: (the matrix, its
    factors or None). The factored form is applied as U (V x), as the kernels apply it."""
    if isinstance(w, (tuple, list)):
        if len(w) != 2:
            raise ValueError(f"{name} must be an array or a pair (U, V), got {len(w)} items")
        U, V = (np.asarray(f, dtype=np.float64) for f in w)
        if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[0]:
            raise ValueError(
                f"{name}: U {U.shape} and V {V.shape} must be (rows, rank) and (rank, cols)"
            )
        return (U.shape[0], V.shape[1]), (U, V)
    W = np.asarray(w, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {W.shape}")
    return W.shape, (W,)


def _apply(factors, x):
    """x (rows, cols) times the matrix transposed: x W^T, or (x V^T) U^T for a pair."""
    if len(factors) == 1:
        return x @ factors[0].T
    U, V = factors
    return (x @ V.T) @ U.T


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _recurrent(cell, x, weight_ih, weight_hh, bias_ih, bias_hh, state, reverse):
    gates = 4 if cell == "lstm" else 3
    (gh, in_size), ih = _matrix64(weight_ih, "weight_ih")
    (gh2, hidden), hh = _matrix64(weight_hh, "weight_hh")
    if gh % gates or gh2 != gh or hidden != gh // gates:
        raise ValueError(
            f"weight_ih ({gh}, {in_size}) and weight_hh ({gh2}, {hidden}) must be "
            f"({gates}H, input_size) and ({gates}H, H)"
        )
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != in_size:
        raise ValueError(f"x must have shape (seq, batch, {in_size}), got shape {x.shape}")
    steps, batch = x.shape[:2]
    b_ih = np.zeros(gh) if bias_ih is None else np.asarray(bias_ih, dtype=np.float64)
    b_hh = np.zeros(gh) if bias_hh is None else np.asarray(bias_hh, dtype=np.float64)
    if b_ih.shape != (gh,) or b_hh.shape != (gh,):
        raise ValueError(f"the biases must have shape ({gh},), got {b_ih.shape} and {b_hh.shape}")
    zeros = np.zeros((batch, hidden))
    if cell == "lstm":
        h, c = (zeros, zeros) if state is None else state
        h = zeros if h is None else np.asarray(h, dtype=np.float64).reshape(batch, hidden)
        c = zeros if c is None else np.asarray(c, dtype=np.float64).reshape(batch, hidden)
    else:
        h = zeros if state is None else np.asarray(state, dtype=np.float64).reshape(batch, hidden)
    out = np.zeros((steps, batch, hidden))
    H = hidden
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        gx = _apply(ih, x[t]) + b_ih
        g_h = _apply(hh, h) + b_hh
        if cell == "lstm":
            pre = gx + g_h
            i, f = _sigmoid(pre[:, :H]), _sigmoid(pre[:, H : 2 * H])
            g, o = np.tanh(pre[:, 2 * H : 3 * H]), _sigmoid(pre[:, 3 * H :])
            c = f * c + i * g
            h = o * np.tanh(c)
        else:
            r = _sigmoid(gx[:, :H] + g_h[:, :H])
            z = _sigmoid(gx[:, H : 2 * H] + g_h[:, H : 2 * H])
            n = np.tanh(gx[:, 2 * H :] + r * g_h[:, 2 * H :])
            h = (1.0 - z) * n + z * h
        out[t] = h
    return out, h, (c if cell == "lstm" else None)


def lstm(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, state=None, *, reverse=False):
    """One LSTM layer, one direction, as torch.nn.LSTM computes it (gates i, f, g, o):
    ``(output, (h_n, c_n))`` for x of shape (seq, batch, input_size); output (seq, batch, H),
    h_n and c_n (batch, H). weight_ih (4H, input_size) and weight_hh (4H, H) are arrays or
    low-rank pairs (U, V); state is (h0, c0) or None (zeros); reverse=True runs from the last
    position to the first. float64 throughout."""
    out, h, c = _recurrent("lstm", x, weight_ih, weight_hh, bias_ih, bias_hh, state, reverse)
    return out, (h, c)


def gru(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, state=None, *, reverse=False):
    """One GRU layer, one direction, as torch.nn.GRU computes it (gates r, z, n; the reset gate
    scales W_hn h + b_hn): ``(output, h_n)``; see ``lstm`` for the arguments (state: h0)."""
    out, h, _ = _recurrent("gru", x, weight_ih, weight_hh, bias_ih, bias_hh, state, reverse)
    return out, h


def embedding(indices, table, padding_idx=None):
    """Rows of an embedding table (an array (num, dim) or a low-rank pair (A, B) with the table
    A @ B) for integer indices of any shape: indices.shape + (dim,), float64. Rows at padding_idx
    are zero. ValueError for an index outside [0, num)."""
    (num, dim), factors = _matrix64(table, "table")
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= num):
        raise ValueError(
            f"indices must be in [0, {num}), got values from {idx.min()} to {idx.max()}"
        )
    flat = idx.reshape(-1)
    rows = factors[0][flat]
    if len(factors) == 2:
        rows = rows @ factors[1]
    if padding_idx is not None:
        rows[flat == padding_idx] = 0.0
    return rows.reshape(idx.shape + (dim,))
