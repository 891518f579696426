"""What a factorized layer costs and how far it is from the dense layer it replaces.

layer_report(layer, dense_weight, calibration=None, *, input_hw=None) -> dict
print_report(entries, *, input_hw=None, file=None) -> str

Everything is computed from the layer's own factors (``U``/``V``, ``first``/``core``/``last``,
``first``/``vertical``/``horizontal``/``last``) and geometry, and the dense weight it replaces:

params           factorized weights (bias excluded); dense_params the dense count
compression      dense_params / params (> 1: smaller)
flops            2 x multiply-adds: per sample for linear layers; for convolutions per image of
                 size input_hw (or the calibration images' size), else per output position
                 (then the input 1x1 stage is counted once per output position, exact for stride 1
                 and "same" padding); dense_flops likewise, flop_reduction = dense_flops / flops
weight_error     ||W - W_hat||_F / ||W||_F, W_hat the dense weight the factors multiply out to
output_error     with calibration X: ||y_hat - y||_F / ||y||_F over X, y = the dense layer without
                 bias, y_hat = the factorized layer minus its bias (None without calibration)
"""

from __future__ import annotations

import sys

import numpy as np

from . import _core
from .reference import output_size

__all__ = ["layer_report", "print_report", "reconstruct"]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _kind(layer):
    for name in ("LowRankLinear", "Linear", "TuckerConv2d", "CPConv2d", "Conv2d"):
        cls = getattr(_core, name, None)
        if cls is not None and isinstance(layer, cls):
            return name
    raise TypeError(f"layer_report: unsupported layer type {type(layer).__name__}")


def reconstruct(layer) -> np.ndarray:
    """The dense float64 weight the layer's factors multiply out to ((out, in) or 4-D)."""
    kind = _kind(layer)
    if kind == "LowRankLinear":
        return _f64(layer.U) @ _f64(layer.V)
    if kind == "Linear":
        return _f64(layer.W)
    if kind == "Conv2d":
        return _f64(layer.weight)
    if kind == "TuckerConv2d":
        return np.einsum("os,sryx,rc->ocyx", _f64(layer.last), _f64(layer.core), _f64(layer.first))
    return np.einsum(
        "or,ry,rx,rc->ocyx",
        _f64(layer.last),
        _f64(layer.vertical),
        _f64(layer.horizontal),
        _f64(layer.first),
    )


def _rank_of(layer, kind):
    if kind == "LowRankLinear":
        return layer.rank
    if kind == "TuckerConv2d":
        return tuple(layer.ranks)
    if kind == "CPConv2d":
        return layer.rank
    return None


def _params(layer, kind):
    names = {
        "LowRankLinear": ("U", "V"),
        "Linear": ("W",),
        "Conv2d": ("weight",),
        "TuckerConv2d": ("first", "core", "last"),
        "CPConv2d": ("first", "vertical", "horizontal", "last"),
    }[kind]
    return int(sum(np.asarray(getattr(layer, n)).size for n in names))


def _flops(layer, kind, hw):
    """(flops, dense_flops, basis) with flops = 2 x multiply-adds."""
    if kind in ("LowRankLinear", "Linear"):
        out, inp = layer.out_features, layer.in_features
        dense = 2 * out * inp
        f = 2 * layer.rank * (out + inp) if kind == "LowRankLinear" else dense
        return f, dense, "per sample"
    cout, cin = layer.out_channels, layer.in_channels
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
    )
    if hw is None:
        h = w = ho = wo = 1
        basis = "per output position"
    else:
        h, w = (int(v) for v in hw)
        ho, wo = output_size(h, kh, sh, ph, dh), output_size(w, kw, sw, pw, dw)
        basis = f"per {h}x{w} image"
    out_pos, in_pos = ho * wo, h * w
    dense = 2 * out_pos * cout * cin * kh * kw
    if kind == "Conv2d":
        return dense, dense, basis
    if kind == "TuckerConv2d":
        r_in, r_out = layer.ranks
        macs = in_pos * r_in * cin + out_pos * r_out * r_in * kh * kw + out_pos * cout * r_out
    else:
        r = layer.rank
        mid = ho * w if hw is not None else 1  # the kh x 1 stage: Ho rows x all W columns
        macs = in_pos * r * cin + mid * r * kh + out_pos * r * kw + out_pos * cout * r
    return 2 * macs, dense, basis


def _dense_layer(kind, layer, W):
    if kind in ("LowRankLinear", "Linear"):
        return _core.Linear(W.astype(np.float32))
    return _core.Conv2d(
        W.astype(np.float32),
        None,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        layout=layer.layout,
    )


def _without_bias(y, layer, kind):
    y = _f64(y)
    if layer.bias is None:
        return y
    b = _f64(layer.bias)
    if kind in ("LowRankLinear", "Linear") or layer.layout == "NHWC":
        return y - b
    return y - b[None, :, None, None]


def layer_report(layer, dense_weight, calibration=None, *, input_hw=None) -> dict:
    """The report of one layer against the dense weight it replaces (see the module docstring)."""
    kind = _kind(layer)
    W = _f64(dense_weight)
    What = reconstruct(layer)
    if W.shape != What.shape:
        raise ValueError(
            f"dense_weight has shape {W.shape}, the {kind} multiplies out to {What.shape}"
        )
    norm = float(np.linalg.norm(W.ravel()))
    werr = float(np.linalg.norm((W - What).ravel()) / norm) if norm > 0 else 0.0
    hw = input_hw
    X = None
    if calibration is not None:
        X = np.asarray(calibration)
        if hw is None and kind not in ("LowRankLinear", "Linear"):
            hw = X.shape[2:4] if layer.layout == "NCHW" else X.shape[1:3]
    flops, dense_flops, basis = _flops(layer, kind, hw)
    params = _params(layer, kind)
    dense = int(W.size)
    out_err = None
    if X is not None:
        y = _f64(_dense_layer(kind, layer, W)(X))
        yhat = _without_bias(layer(X), layer, kind)
        den = float(np.linalg.norm(y.ravel()))
        out_err = float(np.linalg.norm((yhat - y).ravel()) / den) if den > 0 else 0.0
    return {
        "kind": kind,
        "shape": tuple(W.shape),
        "rank": _rank_of(layer, kind),
        "params": params,
        "dense_params": dense,
        "compression": dense / params,
        "flops": int(flops),
        "dense_flops": int(dense_flops),
        "flop_reduction": dense_flops / flops,
        "flops_basis": basis,
        "weight_error": werr,
        "output_error": out_err,
    }


def print_report(entries, *, input_hw=None, file=None) -> str:
    """Print (and return) a table of `layer_report` for entries (name, layer, dense_weight[, X]).

    The last row totals the parameters and FLOPs (FLOPs only when every row has the same basis).
    """
    rows = []
    for e in entries:
        if len(e) not in (3, 4):
            raise ValueError(
                "each entry must be (name, layer, dense_weight) or "
                "(name, layer, dense_weight, calibration)"
            )
        name, layer, W = e[:3]
        rows.append(
            (str(name), layer_report(layer, W, e[3] if len(e) == 4 else None, input_hw=input_hw))
        )
    head = [
        "layer",
        "kind",
        "shape",
        "rank",
        "params",
        "dense",
        "compr.",
        "MFLOPs",
        "FLOP red.",
        "weight err",
        "output err",
    ]
    table = []
    for name, r in rows:
        table.append(
            [
                name,
                r["kind"],
                "x".join(str(v) for v in r["shape"]),
                str(r["rank"] if r["rank"] is not None else "-"),
                f"{r['params']:,}",
                f"{r['dense_params']:,}",
                f"{r['compression']:.2f}x",
                f"{r['flops'] / 1e6:.3f}",
                f"{r['flop_reduction']:.2f}x",
                f"{r['weight_error']:.4f}",
                "-" if r["output_error"] is None else f"{r['output_error']:.4f}",
            ]
        )
    p = sum(r["params"] for _, r in rows)
    d = sum(r["dense_params"] for _, r in rows)
    bases = {r["flops_basis"] for _, r in rows}
    if rows:
        same = len(bases) == 1
        f = sum(r["flops"] for _, r in rows)
        df = sum(r["dense_flops"] for _, r in rows)
        table.append(
            [
                "total",
                "",
                "",
                "",
                f"{p:,}",
                f"{d:,}",
                f"{d / p:.2f}x",
                f"{f / 1e6:.3f}" if same else "-",
                f"{df / f:.2f}x" if same else "-",
                "",
                "",
            ]
        )
    widths = [
        max(len(h), *(len(row[i]) for row in table)) if table else len(h)
        for i, h in enumerate(head)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in table:
        lines.append(
            "  ".join(
                c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
        )
    lines.append(
        "FLOPs = 2 x multiply-adds, "
        + "; ".join(sorted(bases))
        + ". Errors are relative Frobenius norms; output err needs calibration data."
    )
    text = "\n".join(lines)
    print(text, file=file if file is not None else sys.stdout)
    return text
