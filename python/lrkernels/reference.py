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


# ---- reduced precision (precision="fp16" / "int8") ----------------------------------------------
#
# fp16 (the f16w kernels): every weight is rounded once to IEEE half (round to nearest even), then
# the layer computes in float32 as at precision="fp32". fp16_linear & co. return that in float64:
# the kernels differ from it only by float32 rounding of the sums (the fp32 bound of the tests).
#
# int8 (the qd8-f32-qc8w kernels): what the kernels compute, step by step, each float operation
# one float32 rounding in the same order, the integer sums exact, so the kernels agree with
# qd8_linear / qd8_lowrank_linear bit for bit (outputs that pass through subnormal floats aside:
# the layers flush subnormals to zero).
#   weights, per output row j: scale_j = max|W_j| / 127 (1 for a zero row),
#                              q_j = clip(rint(W_j / scale_j), -127, 127)   (quantize_weights)
#   inputs, per row i: lo = min(0, min x_i), hi = max(0, max x_i), s_i = hi/255 - lo/255,
#                      z_i = clip(rint(-128 - lo * (1/s_i)), -128, 127),
#                      q_i = clip(rint(x_i * (1/s_i)) + z_i, -128, 127)   (quantize_rows)
#                      (s_i = 1, z_i = 0, q_i = 0 when s_i is below the smallest normal float)
#   y_ij = float32(sum_k q_ik W_q,jk - z_i sum_k W_q,jk) * (s_i * scale_j) [+ bias_j]
#   a row holding NaN or +-inf gives a NaN output row.
# A low-rank layer first moves 2^e_r between V's row r and U's column r (rebalance_rank_pair:
# exact), then runs x -> V -> (requantized per row) -> U with the same steps.


def fp16_round(a):
    """`a` rounded to IEEE half precision and back to float32 (what the fp16 kernels store)."""
    return np.asarray(a, dtype=np.float32).astype(np.float16).astype(np.float32)


def quantize_weights(w):
    """Per-output-row symmetric int8: (q int8 (n, k), scale float32 (n,)), w ~ scale[:, None] q."""
    w = np.asarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise ValueError("int8 weights must be finite (the layers refuse NaN and inf)")
    amax = np.max(np.abs(w), axis=1)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        q = np.rint(w / scale[:, None])
    q = np.where(np.isnan(q), 0, np.clip(q, -127, 127)).astype(np.int8)
    return q, scale


def quantize_rows(x):
    """Per-row asymmetric int8 of a float32 matrix (m, k): (q int8, scale float32 (m,), zero
    int32 (m,), finite bool (m,)), x ~ scale[:, None] (q - zero)."""
    x = np.asarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    xs = np.where(finite[:, None], x, np.float32(0))
    lo = np.minimum(xs.min(axis=1, initial=0), np.float32(0)).astype(np.float32)
    hi = np.maximum(xs.max(axis=1, initial=0), np.float32(0)).astype(np.float32)
    scale = (hi / np.float32(255) - lo / np.float32(255)).astype(np.float32)
    ok = finite & (scale >= np.finfo(np.float32).tiny)
    scale = np.where(ok, scale, np.float32(1)).astype(np.float32)
    inv = (np.float32(1) / scale).astype(np.float32)
    zero = np.clip(np.rint(np.float32(-128) - lo * inv), -128, 127).astype(np.int32)
    q = np.clip(np.rint(xs * inv[:, None]).astype(np.int64) + zero[:, None], -128, 127)
    q = np.where(ok[:, None], q, 0).astype(np.int8)
    zero = np.where(ok, zero, 0).astype(np.int32)
    return q, scale, zero, finite


def _qd8_stage(x, q, scale, bias):
    qx, sx, zx, finite = quantize_rows(x)
    wsum = q.astype(np.int64).sum(axis=1)
    acc = qx.astype(np.int64) @ q.astype(np.int64).T
    d = (acc - zx[:, None].astype(np.int64) * wsum[None, :]).astype(np.float32)
    y = d * (sx[:, None] * scale[None, :]).astype(np.float32)
    if bias is not None:
        y = (y + np.asarray(bias, dtype=np.float32)).astype(np.float32)
    y[~finite] = np.nan
    return y


def _rows(x, in_features):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (1, 2) or x.shape[-1] != in_features:
        raise ValueError(f"x must be (in,) or (batch, in) with in={in_features}, got {x.shape}")
    return x.reshape(-1, in_features), x.ndim == 1


def qd8_linear(x, W, bias=None, *, activation=None):
    """The int8 Linear layer (precision="int8") exactly as the kernels compute it, float32."""
    W = np.asarray(W, dtype=np.float32)
    x2, vector = _rows(x, W.shape[1])
    y = _qd8_stage(x2, *quantize_weights(W), bias)
    y = clamp_output(y, activation).astype(np.float32)
    return y[0] if vector else y


def rebalance_rank_pair(U, V):
    """(U', V') with U' V' == U V exactly: component r scaled by 2^-s_r in V's row and 2^s_r in
    U's column, s_r = floor((e_V - e_U) / 2), e = the binary exponent of each side's max |value|
    (ilogb)."""
    U = np.asarray(U, dtype=np.float32)
    V = np.asarray(V, dtype=np.float32)
    vmax = np.abs(V).max(axis=1)
    umax = np.abs(U).max(axis=0)
    ok = (vmax > 0) & (umax > 0) & np.isfinite(vmax) & np.isfinite(umax)
    ev = np.frexp(np.where(ok, vmax, 1))[1] - 1
    eu = np.frexp(np.where(ok, umax, 1))[1] - 1
    s = np.where(ok, (ev - eu) // 2, 0)
    return (
        np.ldexp(U, s[None, :]).astype(np.float32),
        np.ldexp(V, -s[:, None]).astype(np.float32),
    )


def qd8_lowrank_linear(x, U, V, bias=None, *, activation=None):
    """The int8 LowRankLinear (precision="int8") exactly as the kernels compute it, float32:
    rebalance, x -> V (no bias) -> requantize per row -> U + bias."""
    U, V = rebalance_rank_pair(U, V)
    x2, vector = _rows(x, V.shape[1])
    t = _qd8_stage(x2, *quantize_weights(V), None)
    y = _qd8_stage(t, *quantize_weights(U), bias)
    y = clamp_output(y, activation).astype(np.float32)
    return y[0] if vector else y


def _qd8_band_params(values):
    """quantize_rows' parameters for one set of values (a convolution band): scale, zero,
    finite, zero_range."""
    v = np.asarray(values, dtype=np.float32).reshape(1, -1)
    q, scale, zero, finite = quantize_rows(v)
    lo = np.float32(min(np.float32(0), v.min(initial=0))) if finite[0] else np.float32(0)
    hi = np.float32(max(np.float32(0), v.max(initial=0))) if finite[0] else np.float32(0)
    s = hi / np.float32(255) - lo / np.float32(255)
    zero_range = not (finite[0] and s >= np.finfo(np.float32).tiny)
    return np.float32(scale[0]), int(zero[0]), bool(finite[0]), zero_range


def _qd8_stage_shared(x, q, scale, bias):
    """_qd8_stage with one quantization shared by every row of x (a block of pixels)."""
    x = np.asarray(x, dtype=np.float32)
    s, zero, finite, zero_range = _qd8_band_params(x)
    y = np.empty((x.shape[0], q.shape[0]), dtype=np.float32)
    if not finite:
        y[...] = np.nan
        return y
    inv = np.float32(1) / s
    if zero_range:
        qx = np.zeros(x.shape, dtype=np.int64)
    else:
        qx = np.clip(np.rint(x * inv).astype(np.int64) + zero, -128, 127)
    wsum = q.astype(np.int64).sum(axis=1)
    d = (qx @ q.astype(np.int64).T - zero * wsum[None, :]).astype(np.float32)
    y[...] = d * (s * scale)[None, :].astype(np.float32)
    if bias is not None:
        y = (y + np.asarray(bias, dtype=np.float32)).astype(np.float32)
    return y


def _qd8_conv_chain(x, first, core, last, bias, stride, padding, dilation, layout, activation):
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    x = np.asarray(x, dtype=np.float32)
    xs = x.transpose(0, 2, 3, 1) if layout == "NCHW" else x  # NHWC
    core = np.asarray(core, dtype=np.float32)
    n_mid, csrc, kh, kw = core.shape
    (sh, sw), (ph, pw), (dh, dw) = (
        _pair(stride, "stride", 1),
        _pair(padding, "padding", 0),
        _pair(dilation, "dilation", 1),
    )
    n, h, w, _ = xs.shape
    ho, wo = output_size(h, kh, sh, ph, dh), output_size(w, kw, sw, pw, dw)
    qc, sc = quantize_weights(core.transpose(0, 2, 3, 1).reshape(n_mid, -1))  # K = (ky, kx, c)
    wsum = qc.astype(np.int64).sum(axis=1)
    q_first = None if first is None else quantize_weights(first)
    q_last = None if last is None else quantize_weights(last)
    band = max(1, min(ho, -(-96 // max(wo, 1))))
    cout = n_mid if last is None else np.shape(last)[0]
    y = np.empty((n, ho, wo, cout), dtype=np.float32)
    for i in range(n):
        src = xs[i]
        if q_first is not None and h * w > 0:  # quantized per image row
            src = np.stack([_qd8_stage_shared(row, *q_first, None) for row in src])
        elif q_first is not None:
            src = np.zeros((h, w, csrc), dtype=np.float32)
        padded = np.zeros((h + 2 * ph, w + 2 * pw, csrc), dtype=np.float32)
        padded[ph : ph + h, pw : pw + w] = src
        mid = np.empty((ho, wo, n_mid), dtype=np.float32)
        for oy0 in range(0, ho, band):
            rows = min(band, ho - oy0)
            read = sorted({(oy0 + r) * sh + ky * dh for r in range(rows) for ky in range(kh)})
            # Rows of the padded image the band reads; those outside it are zero rows too.
            vals = np.stack([padded[iy] if iy < padded.shape[0] else padded[0] * 0 for iy in read])
            scale, zero, finite, zero_range = _qd8_band_params(vals)
            out = mid[oy0 : oy0 + rows]
            if not finite:
                out[...] = np.nan
                continue
            inv = np.float32(1) / scale
            if zero_range:
                qimg = np.zeros(padded.shape, dtype=np.int64)
            else:  # non-finite values elsewhere in the image are never read by this band
                with np.errstate(invalid="ignore"):
                    qimg = np.clip(np.rint(padded * inv).astype(np.int64) + zero, -128, 127)
            oy = (oy0 + np.arange(rows))[:, None, None, None] * sh
            ox = np.arange(wo)[None, :, None, None] * sw
            ky = np.arange(kh)[None, None, :, None] * dh
            kx = np.arange(kw)[None, None, None, :] * dw
            patches = qimg[oy + ky, ox + kx]  # (rows, wo, kh, kw, csrc)
            acc = patches.reshape(rows * wo, -1) @ qc.astype(np.int64).T
            d = (acc - zero * wsum[None, :]).astype(np.float32)
            m = d * (scale * sc)[None, :].astype(np.float32)
            if last is None and bias is not None:
                m = (m + np.asarray(bias, dtype=np.float32)).astype(np.float32)
            out[...] = m.reshape(rows, wo, n_mid)
        if q_last is None:
            y[i] = mid if activation is None else clamp_output(mid, activation)
        else:
            for oy0 in range(0, ho, band):  # quantized per band
                rows = mid[oy0 : oy0 + band].reshape(-1, n_mid)
                z = _qd8_stage_shared(rows, *q_last, bias)
                z = z if activation is None else clamp_output(z, activation)
                y[i, oy0 : oy0 + band] = z.reshape(-1, wo, cout)
    return y.transpose(0, 3, 1, 2) if layout == "NCHW" else y


def qd8_tucker_conv2d(
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
    """TuckerConv2d at precision="int8" exactly as the kernels compute it (float32), quantizing
    blocks of pixels with one scale and zero point each (the quantize_rows formulas over the
    block): the first 1x1 stage's input per image row; the core's per band of
    B = max(1, min(Ho, ceil(96 / Wo))) output rows, over every padded source row the band reads
    (padding quantizes to the zero point, so the taps share one scale); the last 1x1 stage's per
    band of pixels. A NaN or inf input makes every output of the blocks that read it NaN."""
    return _qd8_conv_chain(
        x, first, core, last, bias, stride, padding, dilation, layout, activation
    )


def qd8_conv2d(
    x, weight, bias=None, stride=1, padding=0, dilation=1, layout="NCHW", *, activation=None
):
    """Conv2d at precision="int8" exactly as the kernels compute it: qd8_tucker_conv2d's core
    stage alone (the input quantized per band), the bias added in float32."""
    return _qd8_conv_chain(
        x, None, weight, None, bias, stride, padding, dilation, layout, activation
    )
