"""What a factorized layer costs and how far it is from the dense layer it replaces.

layer_report(layer, dense_weight, calibration=None, *, input_hw=None) -> dict
print_report(entries, *, input_hw=None, file=None) -> str

Everything is computed from the layer's own factors and geometry, read through its
:class:`lrkernels.layer_specs.LayerSpec` (any of the five layer kinds, user subclasses too), and
the dense weight it replaces (kind: the class name of the layer kind, e.g. "TuckerConv2d"):

params           factorized weights (bias excluded); dense_params the dense count
compression      dense_params / params (> 1: smaller)
flops            2 x multiply-adds: per sample for linear layers; for convolutions per image of
                 size input_hw (or the calibration images' size), else per output position
                 (then the input 1x1 stage is counted once per output position, exact for stride 1
                 and "same" padding); dense_flops likewise, flop_reduction = dense_flops / flops
weight_error     ||W - W_hat||_F / ||W||_F, W_hat the dense weight the factors multiply out to
output_error     with calibration X: ||y_hat - y||_F / ||y||_F over X, y = the dense layer without
                 bias, y_hat = the factorized layer minus its bias (None without calibration)
heldout_error    from_dense with calibration: the relative output error on calibration data held
                 out of the fit (the cross-validation of its reg; None otherwise), insample_error
                 the one on all the calibration data it was fitted to, reg the ridge used (read
                 from layer.rank_choice.details)
"""

from __future__ import annotations

import sys

import numpy as np

from .layer_specs import spec_for

__all__ = ["layer_report", "print_report", "reconstruct"]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _spec(layer, where):
    """The layer's LayerSpec; TypeError naming `where` and the type for anything else."""
    try:
        return spec_for(layer)
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from None


def reconstruct(layer) -> np.ndarray:
    """The dense float64 weight the layer's factors multiply out to ((out, in) or 4-D)."""
    return _spec(layer, "reconstruct").to_dense(layer)


def _rank_of(spec, layer):
    """None for dense kinds, the int rank (LowRankLinear, CPConv2d), the (R_in, R_out) pair."""
    ranks = spec.ranks(layer)
    if not ranks:
        return None
    return ranks[0] if len(ranks) == 1 else ranks


def _without_bias(spec, layer, y):
    y = _f64(y)
    if layer.bias is None:
        return y
    b = _f64(layer.bias)
    if not spec.conv or spec.geometry(layer)["layout"] == "NHWC":
        return y - b  # the channel axis is last
    return y - b[None, :, None, None]


def layer_report(layer, dense_weight, calibration=None, *, input_hw=None) -> dict:
    """The report of one layer against the dense weight it replaces (see the module docstring)."""
    spec = _spec(layer, "layer_report")
    kind = spec.name
    W = _f64(dense_weight)
    What = spec.to_dense(layer)
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
        if spec.conv and X.ndim != 4:
            layout = spec.geometry(layer)["layout"]
            raise ValueError(f"calibration must be images ({layout}) for a {kind}, got {X.shape}")
        if hw is None and spec.conv:
            hw = X.shape[2:4] if spec.geometry(layer)["layout"] == "NCHW" else X.shape[1:3]
    flops, dense_flops, basis = spec.flops(layer, hw)
    params = spec.num_factor_params(layer)
    dense = int(W.size)
    out_err = None
    if X is not None:
        y = _f64(spec.dense_equivalent(layer, W, bias=None)(X))
        yhat = _without_bias(spec, layer, layer(X))
        den = float(np.linalg.norm(y.ravel()))
        out_err = float(np.linalg.norm((yhat - y).ravel()) / den) if den > 0 else 0.0
    return {
        "kind": kind,
        "shape": tuple(W.shape),
        "rank": _rank_of(spec, layer),
        "params": params,
        "dense_params": dense,
        "compression": dense / params,
        "flops": int(flops),
        "dense_flops": int(dense_flops),
        "flop_reduction": dense_flops / flops,
        "flops_basis": basis,
        "weight_error": werr,
        "output_error": out_err,
        **_fit_errors(layer),
    }


def _fit_errors(layer):
    """heldout_error, insample_error, reg of a from_dense fit with calibration (else None)."""
    details = getattr(getattr(layer, "rank_choice", None), "details", None) or {}
    return {k: details.get(k) for k in ("heldout_error", "insample_error", "reg")}


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
    heldout = any(r["heldout_error"] is not None for _, r in rows)
    if heldout:
        head.append("held-out err")
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
            + (
                ["-" if r["heldout_error"] is None else f"{r['heldout_error']:.4f}"]
                if heldout
                else []
            )
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
            + ([""] if heldout else [])
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
        + ". Errors are relative Frobenius norms; output err needs calibration data"
        + ("; held-out err: on calibration data held out of the fit." if heldout else ".")
    )
    text = "\n".join(lines)
    print(text, file=file if file is not None else sys.stdout)
    return text
