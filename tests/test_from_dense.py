"""LowRankLinear.from_dense, TuckerConv2d.from_dense, CPConv2d.from_dense: one criterion per call,
the layers they build equal their float64 reference on every ISA, data-aware beats weight-only,
and lrkernels.report tells sizes, FLOPs and errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

import lrkernels
from layer_table import SPEC
from lrk_testing import (
    BOUND_FACTOR,
    BOUNDS,
    CONV_DEFAULTS,
    EPS32,
    SUBNORMAL32,
    assert_within_bound,
    lowrank_bound,
)
from lrkernels import decompose, reference, report
from lrkernels.rank import RankWarning

HAS_CP = hasattr(lrkernels, "CPConv2d")
needs_cp = pytest.mark.skipif(not HAS_CP, reason="lrkernels.CPConv2d is not in this build")


def _a(x):
    return np.abs(np.asarray(x, dtype=np.float64))


def cp_conv2d_bound(
    x, first, vertical, horizontal, last, bias=None, stride=1, padding=0, dilation=1, layout="NCHW"
):
    """8 eps (Cin kh kw + Cin + kh + kw + 2 R + 2) (|last| * |h| * |v| * (|first| * |x|) + |b|):
    the stage-by-stage rounding, or a kernel merging stages, whichever order it uses."""
    mag = reference.cp_conv2d(
        _a(x),
        _a(first),
        _a(vertical),
        _a(horizontal),
        _a(last),
        None if bias is None else _a(bias),
        stride,
        padding,
        dilation,
        layout,
    )
    r, cin = np.shape(first)
    kh, kw = np.shape(vertical)[1], np.shape(horizontal)[1]
    n = cin * kh * kw + cin + kh + kw + 2 * r + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def _slow_matrix(rng, out, inp, power=0.3):
    k = min(out, inp)
    U = np.linalg.qr(rng.standard_normal((out, k)))[0]
    V = np.linalg.qr(rng.standard_normal((inp, k)))[0]
    return (U * (1.0 + np.arange(k)) ** -power) @ V.T


def _planted(rng, shape, r, noise=0.01):
    W = rng.standard_normal((shape[0], r)) @ rng.standard_normal((r, shape[1]))
    return W / np.abs(W).max() + noise * rng.standard_normal(shape)


def _image(rng, n, c, hw, layout):
    shape = (n, c, *hw) if layout == "NCHW" else (n, *hw, c)
    return rng.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# criteria and argument errors
# --------------------------------------------------------------------------------------------


def test_linear_criteria(rng):
    W = _planted(rng, (40, 30), 4)
    assert lrkernels.LowRankLinear.from_dense(W, rank=7).rank == 7
    U, V, c = decompose.linear_factors(W, energy=0.9)
    assert c.rank == lrkernels.LowRankLinear.from_dense(W, energy=0.9).rank
    assert "0.9" in c.reason and c.details["kept"] >= 0.9
    assert lrkernels.LowRankLinear.from_dense(W, ratio=0.25).rank == int(0.25 * 1200 // 70)
    assert lrkernels.LowRankLinear.from_dense(W, vbmf=True).rank == 4
    layer = lrkernels.LowRankLinear.from_dense(W, np.arange(40.0), rank=3)
    np.testing.assert_array_equal(layer.bias, np.arange(40, dtype=np.float32))
    # the layer holds exactly the factors of decompose.svd
    U, V = decompose.svd(W, 3)
    np.testing.assert_array_equal(layer.U, U)
    np.testing.assert_array_equal(layer.V, V)


LINEAR_BAD = [
    ({}, "exactly one criterion of rank=, energy=, ratio=, vbmf=True \\(got none\\)"),
    ({"rank": 2, "energy": 0.5}, "got rank, energy"),
    ({"ratio": 0.5, "vbmf": True}, "got ratio, vbmf"),
    ({"rank": 2, "energy": 0.5, "ratio": 0.1, "vbmf": True}, "exactly one"),
    ({"rank": 0}, "rank"),
    ({"rank": 21}, "above"),  # min(20, 30) = 20
    ({"rank": 2.0}, "integer"),
    ({"energy": 0.0}, "energy"),
    ({"energy": 1.5}, "energy"),
    ({"energy": -1}, "energy"),
    ({"ratio": 0.0}, "ratio"),
    ({"ratio": -0.2}, "ratio"),
    ({"ratio": 0.01}, "too small"),
    ({"vbmf": "yes"}, "vbmf"),
    ({"rank": 2, "calibration": np.ones((5, 7))}, "features"),
]


@pytest.mark.parametrize("kwargs,match", LINEAR_BAD)
def test_linear_bad_arguments(rng, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lrkernels.LowRankLinear.from_dense(rng.standard_normal((20, 30)), **kwargs)


def test_linear_bad_weight():
    with pytest.raises(ValueError):
        lrkernels.LowRankLinear.from_dense(np.ones((2, 3, 4)), rank=1)
    with pytest.raises(ValueError):
        lrkernels.LowRankLinear.from_dense(np.array([[np.nan, 1.0]]), rank=1)


TUCKER_BAD = [
    ({}, "exactly one criterion of rank=, energy=, ratio=, vbmf=True \\(got none\\)"),
    ({"ranks": (2, 2), "ratio": 0.5}, "got ranks, ratio"),
    ({"ranks": (9, 2)}, "r_in"),  # Cin = 8
    ({"ranks": (2, 11)}, "r_out"),  # Cout = 10
    ({"ranks": (0, 2)}, "r_in"),
    ({"ranks": (1, 2, 3)}, "pair"),
    ({"energy": 0}, "energy"),
    ({"energy": 1.01}, "energy"),
    ({"ratio": 0}, "ratio"),
    ({"ratio": 0.001}, "too small"),
    ({"ranks": 2, "method": "cp"}, "method"),
    ({"ranks": 2, "calibration": np.ones((2, 3, 6, 6))}, "channels"),
]


@pytest.mark.parametrize("kwargs,match", TUCKER_BAD)
def test_tucker_bad_arguments(rng, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lrkernels.TuckerConv2d.from_dense(rng.standard_normal((10, 8, 3, 3)), **kwargs)


def test_tucker_criteria(rng):
    T = rng.standard_normal((16, 12, 3, 3))
    assert lrkernels.TuckerConv2d.from_dense(T, ranks=(3, 5)).ranks == (3, 5)
    assert lrkernels.TuckerConv2d.from_dense(T, ranks=4).ranks == (4, 4)
    assert lrkernels.TuckerConv2d.from_dense(T, ratio=0.3).ranks == (
        lrkernels.rank.by_ratio(T.shape, 0.3, "tucker2").rank
    )
    layer = lrkernels.TuckerConv2d.from_dense(T, energy=0.8)
    That = report.reconstruct(layer)
    assert 1 - np.sum((T - That) ** 2) / np.sum(T**2) >= 0.8 - 1e-5
    with pytest.warns(RankWarning):  # pure noise: both unfoldings clamp to 1
        assert lrkernels.TuckerConv2d.from_dense(T, vbmf=True).ranks == (1, 1)
    first, core, last, choice = decompose.tucker2_factors(T, ranks=(3, 5))
    assert (
        choice.details["decomposition"]["error"] <= choice.details["decomposition"]["hosvd_error"]
    )


CP_BAD = [
    ({}, "exactly one criterion of rank=, energy=, ratio= \\(got none\\)"),
    ({"rank": 2, "energy": 0.9}, "got rank, energy"),
    ({"vbmf": True}, "no analytic VBMF"),
    ({"rank": 0}, "rank"),
    ({"rank": 10 * 8 * 9 + 1}, "largest CP rank"),
    ({"energy": 0}, "energy"),
    ({"energy": 2}, "energy"),
    ({"ratio": -1}, "ratio"),
    ({"ratio": 0.001}, "too small"),
]


@needs_cp
@pytest.mark.parametrize("kwargs,match", CP_BAD)
def test_cp_bad_arguments(rng, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lrkernels.CPConv2d.from_dense(rng.standard_normal((10, 8, 3, 3)), **kwargs)


@needs_cp
def test_cp_criteria(rng):
    r = 3
    fs = [rng.standard_normal(s) for s in [(r, 8), (r, 3), (r, 3), (10, r)]]
    T = np.einsum("rc,ry,rx,or->ocyx", *fs) + 1e-3 * rng.standard_normal((10, 8, 3, 3))
    assert lrkernels.CPConv2d.from_dense(T, rank=5).rank == 5
    assert lrkernels.CPConv2d.from_dense(T, ratio=0.2).rank == int(0.2 * 720 // 24)
    *_, choice = decompose.cp_factors(T, energy=0.999)
    assert choice.rank == r, choice
    layer = lrkernels.CPConv2d.from_dense(T, energy=0.999)
    assert layer.rank == r
    That = report.reconstruct(layer)
    assert 1 - np.sum((T - That) ** 2) / np.sum(T**2) >= 0.999 - 1e-5


# --------------------------------------------------------------------------------------------
# every from_dense layer equals its reference on every ISA
# --------------------------------------------------------------------------------------------


def _check(layer, x, isa, ref, bound, case):
    y = layer(x)
    assert lrkernels.last_used_isa() == isa, case
    assert y.dtype == np.float32
    assert_within_bound(y, ref, bound, case)


@pytest.mark.filterwarnings("ignore::lrkernels.decompose.CalibrationWarning")  # few rows on purpose
def test_lowrank_from_dense_matches_reference(rng, isa):
    W = _planted(rng, (48, 40), 6)
    b = rng.standard_normal(48)
    X = rng.standard_normal((64, 40)) @ rng.standard_normal((40, 40))
    x = rng.standard_normal((13, 40)).astype(np.float32)
    kwargs = [
        {"rank": 5},
        {"energy": 0.95},
        {"ratio": 0.3},
        {"vbmf": True},
        {"rank": 8, "calibration": X},
        {"energy": 0.9, "calibration": X},
    ]
    for kw in kwargs:
        for bias in (None, b):
            layer = lrkernels.LowRankLinear.from_dense(W, bias, **kw)
            U, V, lb = layer.U, layer.V, layer.bias
            _check(
                layer,
                x,
                isa,
                reference.lowrank_linear(x, U, V, lb),
                lowrank_bound(x, U, V, lb),
                f"{kw} bias={bias is not None}",
            )


TUCKER_CASES = [
    dict(shape=(12, 10, 3, 3), crit={"ranks": (4, 5)}, geo=dict(padding=1)),
    dict(shape=(16, 8, 3, 3), crit={"ratio": 0.3}, geo=dict(stride=2, padding=1)),
    dict(shape=(8, 12, 3, 1), crit={"energy": 0.7}, geo=dict(padding=(1, 0), dilation=(2, 1))),
    dict(shape=(10, 6, 1, 1), crit={"ranks": 3}, geo=dict()),
    dict(shape=(9, 7, 3, 3), crit={"ranks": (3, 4)}, geo=dict(padding=2, dilation=2), calib=True),
    dict(shape=(12, 10, 3, 3), crit={"ranks": (4, 4), "method": "hosvd"}, geo=dict(stride=(1, 2))),
]


def _check_from_dense(rng, isa, kind, cases, layout, x_hw, **extra):
    """`from_dense` of each case's random dense weight gives a layer (any kind of the table)
    that matches the float64 reference of its own factors."""
    spec = SPEC[kind]
    bounds = {**BOUNDS, "CPConv2d": cp_conv2d_bound}
    for case in cases:
        T = rng.standard_normal(case["shape"])
        cout, cin = case["shape"][:2]
        b = rng.standard_normal(cout)
        kw = dict(case["crit"], **case["geo"], layout=layout, **extra)
        if case.get("calib"):
            kw["calibration"] = _image(rng, 3, cin, (9, 9), layout)
        layer = spec.cls.from_dense(T, b, **kw)
        assert layer.layout == layout
        x = _image(rng, 2, cin, x_hw, layout)
        geometry = {**CONV_DEFAULTS, **case["geo"], "layout": layout}
        args = (*spec.factors(layer), layer.bias)
        ref = spec.reference(x, *args, **geometry)
        _check(layer, x, isa, ref, bounds[kind](x, *args, **geometry), f"{case} layout={layout}")


@pytest.mark.filterwarnings("ignore::lrkernels.decompose.CalibrationWarning")  # few rows on purpose
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_tucker_from_dense_matches_reference(rng, isa, layout):
    _check_from_dense(rng, isa, "TuckerConv2d", TUCKER_CASES, layout, (9, 8))


@pytest.mark.filterwarnings("ignore::lrkernels.decompose.CalibrationWarning")  # few rows on purpose
@needs_cp
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_cp_from_dense_matches_reference(rng, isa, layout):
    cases = [
        dict(shape=(12, 10, 3, 3), crit={"rank": 6}, geo=dict(padding=1)),
        dict(shape=(8, 6, 3, 5), crit={"ratio": 0.25}, geo=dict(stride=(2, 1), padding=(1, 2))),
        dict(shape=(10, 8, 3, 3), crit={"rank": 4}, geo=dict(dilation=2, padding=2), calib=True),
        dict(shape=(6, 6, 1, 3), crit={"rank": 2}, geo=dict(stride=2)),
    ]
    _check_from_dense(rng, isa, "CPConv2d", cases, layout, (9, 10), n_iter_max=60)


# --------------------------------------------------------------------------------------------
# data-aware beats weight-only (through the layers and the report)
# --------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::lrkernels.decompose.CalibrationWarning")  # few rows on purpose
def test_from_dense_data_aware_beats_weight_only(rng):
    out, inp = 64, 80
    W = _slow_matrix(rng, out, inp)
    basis = np.linalg.qr(rng.standard_normal((inp, inp)))[0]

    def inputs(n):
        return ((rng.standard_normal((n, inp)) * (1 + np.arange(inp)) ** -1.0) @ basis).astype(
            np.float32
        )

    X, Xt = inputs(600), inputs(600)
    plain = lrkernels.LowRankLinear.from_dense(W, rank=12)
    aware = lrkernels.LowRankLinear.from_dense(W, rank=12, calibration=X)
    e_plain = report.layer_report(plain, W, Xt)["output_error"]
    e_aware = report.layer_report(aware, W, Xt)["output_error"]
    assert e_aware < 0.75 * e_plain, (e_plain, e_aware)

    cout, cin = 20, 16
    T = _slow_matrix(rng, cout, cin * 9).reshape(cout, cin, 3, 3)
    cb = np.linalg.qr(rng.standard_normal((cin, cin)))[0]

    def images(n):
        z = (rng.standard_normal((n, 8, 8, cin)) * (1 + np.arange(cin)) ** -1.0) @ cb.T
        return np.ascontiguousarray(z.transpose(0, 3, 1, 2)).astype(np.float32)

    Xc, Xct = images(8), images(8)
    plain = lrkernels.TuckerConv2d.from_dense(T, ranks=(5, 6), padding=1)
    aware = lrkernels.TuckerConv2d.from_dense(T, ranks=(5, 6), padding=1, calibration=Xc)
    e_plain = report.layer_report(plain, T, Xct)["output_error"]
    e_aware = report.layer_report(aware, T, Xct)["output_error"]
    assert e_aware < 0.75 * e_plain, (e_plain, e_aware)
    if HAS_CP:
        plain = lrkernels.CPConv2d.from_dense(T, rank=8, padding=1, n_iter_max=60)
        aware = lrkernels.CPConv2d.from_dense(T, rank=8, padding=1, n_iter_max=60, calibration=Xc)
        e_plain = report.layer_report(plain, T, Xct)["output_error"]
        e_aware = report.layer_report(aware, T, Xct)["output_error"]
        assert e_aware < 0.75 * e_plain, (e_plain, e_aware)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def test_layer_report_linear(rng):
    W = rng.standard_normal((40, 30))
    layer = lrkernels.LowRankLinear.from_dense(W, np.ones(40), rank=6)
    r = report.layer_report(layer, W)
    assert r["kind"] == "LowRankLinear" and r["rank"] == 6 and r["shape"] == (40, 30)
    assert r["params"] == 6 * 70 and r["dense_params"] == 1200
    assert r["compression"] == pytest.approx(1200 / 420)
    assert r["flops"] == 2 * 6 * 70 and r["dense_flops"] == 2 * 1200
    s = np.linalg.svd(W, compute_uv=False)
    assert r["weight_error"] == pytest.approx(np.sqrt(np.sum(s[6:] ** 2) / np.sum(s**2)), rel=1e-5)
    assert r["output_error"] is None
    X = rng.standard_normal((50, 30))
    r = report.layer_report(layer, W, X)
    D = W - report.reconstruct(layer)
    assert r["output_error"] == pytest.approx(
        np.linalg.norm(X @ D.T) / np.linalg.norm(X @ W.T), rel=1e-4
    )


def test_layer_report_convs(rng):
    T = rng.standard_normal((16, 12, 3, 3))
    layer = lrkernels.TuckerConv2d.from_dense(T, np.ones(16), ranks=(4, 6), stride=2, padding=1)
    r = report.layer_report(layer, T)
    assert r["params"] == 4 * 12 + 6 * 4 * 9 + 16 * 6 and r["dense_params"] == T.size
    assert r["flops_basis"] == "per output position"
    assert r["flops"] == 2 * (12 * 4 + 6 * 4 * 9 + 16 * 6)
    X = rng.standard_normal((2, 12, 10, 10))
    r = report.layer_report(layer, T, X)
    assert r["flops_basis"] == "per 10x10 image"  # 5x5 outputs
    assert r["flops"] == 2 * (100 * 4 * 12 + 25 * 6 * 4 * 9 + 25 * 16 * 6)
    assert r["dense_flops"] == 2 * 25 * 16 * 12 * 9
    y = reference.conv2d(X, T, stride=2, padding=1)
    yh = reference.conv2d(X, report.reconstruct(layer), stride=2, padding=1)
    assert r["output_error"] == pytest.approx(np.linalg.norm(yh - y) / np.linalg.norm(y), rel=1e-4)
    assert r["weight_error"] == pytest.approx(
        np.linalg.norm(T - report.reconstruct(layer)) / np.linalg.norm(T), rel=1e-6
    )
    if HAS_CP:
        cp = lrkernels.CPConv2d.from_dense(T, rank=5, padding=1, layout="NHWC", n_iter_max=30)
        r = report.layer_report(cp, T, X.transpose(0, 2, 3, 1))
        assert r["kind"] == "CPConv2d" and r["rank"] == 5
        assert r["params"] == 5 * (12 + 3 + 3 + 16)
        assert r["flops"] == 2 * (100 * 5 * 12 + 100 * 5 * 3 + 100 * 5 * 3 + 100 * 16 * 5)
        assert 0 < r["weight_error"] < 1 and 0 < r["output_error"] < 1.5


def test_print_report(rng):
    W = rng.standard_normal((40, 30))
    T = rng.standard_normal((16, 12, 3, 3))
    entries = [
        ("fc1", lrkernels.LowRankLinear.from_dense(W, rank=6), W, rng.standard_normal((8, 30))),
        ("conv1", lrkernels.TuckerConv2d.from_dense(T, ranks=(4, 6)), T),
    ]
    buf = io.StringIO()
    text = report.print_report(entries, file=buf)
    assert buf.getvalue().rstrip("\n") == text
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["layer", "kind", "shape"]
    assert any(line.startswith("fc1") and "LowRankLinear" in line for line in lines)
    assert any(line.startswith("conv1") and "(4, 6)" in line for line in lines)
    total = next(line for line in lines if line.startswith("total"))
    assert f"{6 * 70 + 4 * 12 + 6 * 4 * 9 + 16 * 6:,}" in total
    with pytest.raises(ValueError):
        report.print_report([("x", entries[0][1])], file=buf)
    with pytest.raises(ValueError, match="shape"):
        report.layer_report(entries[0][1], T)


# --------------------------------------------------------------------------------------------
# one keyword set: rank= for every kind (TuckerConv2d also takes ranks=, the same keyword)
# --------------------------------------------------------------------------------------------


def test_tucker_rank_is_ranks(rng):
    T = rng.standard_normal((10, 8, 3, 3))
    Tk = lrkernels.TuckerConv2d
    assert Tk.from_dense(T, rank=(3, 5)).ranks == (3, 5)
    assert Tk.from_dense(T, rank=4).ranks == (4, 4)
    a, b = Tk.from_dense(T, rank=(3, 5)), Tk.from_dense(T, ranks=(3, 5))
    np.testing.assert_array_equal(a.core, b.core)
    *_, choice = decompose.tucker2_factors(T, rank=(2, 3))
    assert choice.rank == (2, 3)
    with pytest.raises(ValueError, match="rank= and ranks= are the same criterion"):
        Tk.from_dense(T, rank=2, ranks=2)
    with pytest.raises(ValueError, match="got rank, energy"):
        Tk.from_dense(T, rank=2, energy=0.5)
    with pytest.raises(ValueError, match="rank must be an int or a pair"):
        Tk.from_dense(T, rank=(1, 2, 3))


def test_from_dense_keyword_set_is_shared():
    import inspect

    common = ["weight", "bias", "rank", "energy", "ratio", "vbmf", "calibration"]
    for cls in (lrkernels.LowRankLinear, lrkernels.TuckerConv2d, lrkernels.CPConv2d):
        params = list(inspect.signature(cls.from_dense).parameters)
        assert params[: len(common)] == common, (cls.__name__, params)
        assert "layer_class" not in params and "layer_class" not in cls.from_dense.__doc__
    with pytest.raises(TypeError, match="layer_class"):
        lrkernels.LowRankLinear.from_dense(np.ones((3, 3)), rank=1, layer_class=lrkernels.Linear)


def test_from_dense_records_how_the_rank_was_found():
    """Issue 11: the layer says how its rank was found (the RankChoice of its criterion)."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((20, 30))
    fc = lrkernels.LowRankLinear.from_dense(W, energy=0.5)
    assert fc.rank_choice.rank == fc.rank and "energy" in fc.rank_choice.reason
    tk = lrkernels.TuckerConv2d.from_dense(np.ones((4, 3, 3, 3)), energy=1.0)
    assert tk.ranks == (1, 1) and tuple(tk.rank_choice.rank) == (1, 1)
    cp = lrkernels.CPConv2d.from_dense(rng.standard_normal((6, 6, 3, 3)), rank=4, padding=1)
    assert cp.rank_choice.rank == 4 and cp.rank_choice.reason


# --------------------------------------------------------------------------------------------
# issue 15, items 1-2: the ridge chosen by held-out error (reg=), the few-positions warning, the
# energy floor with calibration and the low-rank warning
# --------------------------------------------------------------------------------------------

CalibrationWarning = decompose.CalibrationWarning


def _overfit_case(seed, n, d=64, out=48):
    """A decaying weight, correlated inputs plus noise: n calibration rows, 2000 held-out rows."""
    g = np.random.default_rng(seed)
    W = g.standard_normal((out, d)) * np.arange(1, d + 1) ** -0.3
    Q, _ = np.linalg.qr(g.standard_normal((d, d)))
    X = g.standard_normal((n + 2000, d)) @ (Q * np.arange(1, d + 1) ** -1.0).T
    X += 0.05 * g.standard_normal(X.shape)
    return W, X[:n], X[n:]


def _out_err(W, U, V, X):
    return np.linalg.norm(X @ (W - U @ V).T) / np.linalg.norm(X @ W.T)


@pytest.mark.filterwarnings("ignore::lrkernels.decompose.CalibrationWarning")
@pytest.mark.parametrize("seed", [0, 1, 3])
def test_reg_auto_larger_ridge_for_few_rows_and_no_worse_held_out(seed):
    W, Xfew, Xtest = _overfit_case(seed, 40)  # fewer rows than features
    _, Xmany, _ = _overfit_case(seed, 2000)
    *_, few = decompose.linear_factors(W, rank=8, calibration=Xfew)
    *_, many = decompose.linear_factors(W, rank=8, calibration=Xmany)
    assert few.details["reg"] > many.details["reg"]
    assert few.details["reg_option"] == "auto" and few.details["heldout_folds"] == 5
    assert len(few.details["reg_heldout_errors"]) == len(few.details["reg_grid"])
    assert few.details["heldout_error"] == min(few.details["reg_heldout_errors"])
    U0, V0, _ = decompose.linear_factors(W, rank=8, calibration=Xfew, reg=0)
    Ua, Va, _ = decompose.linear_factors(W, rank=8, calibration=Xfew)
    assert _out_err(W, Ua, Va, Xtest) <= _out_err(W, U0, V0, Xtest) * 1.001


def test_reg_fixed_and_details(rng):
    W = rng.standard_normal((24, 16))
    X = rng.standard_normal((200, 16))
    layer = lrkernels.LowRankLinear.from_dense(W, rank=4, calibration=X, reg=0.5)
    d = layer.rank_choice.details
    assert d["reg"] == 0.5 and d["reg_option"] == 0.5 and "reg_grid" not in d
    assert 0 < d["insample_error"] < 1 and 0 < d["heldout_error"] < 1
    U, V = decompose.svd(W, 4, calibration=X, reg=0.5)
    np.testing.assert_array_equal(np.asarray(layer.factors[0]), U)
    plain = lrkernels.LowRankLinear.from_dense(W, rank=4)  # reg does nothing without data
    assert "reg" not in plain.rank_choice.details
    assert report.layer_report(plain, W)["heldout_error"] is None
    r = report.layer_report(layer, W)
    assert r["heldout_error"] == d["heldout_error"] and r["reg"] == 0.5
    text = report.print_report([("fc", layer, W)], file=io.StringIO())
    assert "held-out err" in text and f"{d['heldout_error']:.4f}" in text


@pytest.mark.parametrize("bad", ["Auto", "none", -1, -1e-3, float("nan"), float("inf"), True, None])
def test_reg_validation(rng, bad):
    W = rng.standard_normal((8, 6))
    X = rng.standard_normal((100, 6))
    with pytest.raises(ValueError, match="reg must be 'auto' or a finite number >= 0"):
        lrkernels.LowRankLinear.from_dense(W, rank=2, calibration=X, reg=bad)
    T = rng.standard_normal((4, 3, 3, 3))
    imgs = rng.standard_normal((6, 3, 8, 8))
    with pytest.raises(ValueError, match="reg must be"):
        lrkernels.TuckerConv2d.from_dense(T, rank=2, calibration=imgs, reg=bad)
    if HAS_CP:
        with pytest.raises(ValueError, match="reg must be"):
            lrkernels.CPConv2d.from_dense(T, rank=2, calibration=imgs, reg=bad)


@pytest.mark.filterwarnings("ignore::lrkernels.decompose.CalibrationWarning")
def test_reg_auto_is_deterministic(rng):
    W, X, _ = _overfit_case(5, 40)
    a = decompose.linear_factors(W, energy=0.8, calibration=X)
    b = decompose.linear_factors(W, energy=0.8, calibration=X)
    for x, y in zip(a[:2], b[:2]):
        np.testing.assert_array_equal(x, y)
    assert a[2].rank == b[2].rank
    assert a[2].details["reg_heldout_errors"] == b[2].details["reg_heldout_errors"]
    T = rng.standard_normal((6, 4, 3, 3))
    imgs = rng.standard_normal((10, 4, 7, 7))
    t1 = decompose.tucker2_factors(T, rank=(2, 3), calibration=imgs, padding=1)
    t2 = decompose.tucker2_factors(T, rank=(2, 3), calibration=imgs, padding=1)
    for x, y in zip(t1[:3], t2[:3]):
        np.testing.assert_array_equal(x, y)
    assert t1[3].details["reg"] == t2[3].details["reg"]


def test_conv_reg_auto_reports_errors(rng):
    T = rng.standard_normal((6, 4, 3, 3))
    imgs = rng.standard_normal((10, 4, 7, 7))
    tk = lrkernels.TuckerConv2d.from_dense(T, rank=(2, 3), calibration=imgs, padding=1)
    d = tk.rank_choice.details
    assert d["reg"] in d["reg_grid"] and d["heldout_folds"] == 1
    assert d["calibration_positions"] == 10 * 49
    assert d["insample_error"] == d["decomposition"]["output_error"]
    assert 0 < d["heldout_error"] < 1.5
    if HAS_CP:
        cp = lrkernels.CPConv2d.from_dense(T, rank=3, calibration=imgs, padding=1)
        d = cp.rank_choice.details
        assert d["reg"] in d["reg_grid"] and 0 < d["heldout_error"] < 1.5
        assert d["insample_error"] == d["decomposition"]["output_error"]
    with pytest.warns(CalibrationWarning):
        one = lrkernels.TuckerConv2d.from_dense(T, rank=2, calibration=imgs[:1], padding=1)
    assert one.rank_choice.details["heldout_error"] is None  # one image: nothing to hold out


def test_few_calibration_positions_warn(rng):
    W = rng.standard_normal((8, 32))
    with pytest.warns(CalibrationWarning, match="127 rows, fewer than 4 x the input dimension 32"):
        lrkernels.LowRankLinear.from_dense(W, rank=2, calibration=rng.standard_normal((127, 32)))
    lrkernels.LowRankLinear.from_dense(W, rank=2, calibration=rng.standard_normal((128, 32)))
    T = rng.standard_normal((4, 8, 3, 3))  # input dimension 72: 288 patches needed
    with pytest.warns(CalibrationWarning, match="25 patches"):
        lrkernels.TuckerConv2d.from_dense(T, rank=2, calibration=rng.standard_normal((1, 8, 7, 7)))
    lrkernels.TuckerConv2d.from_dense(
        T, rank=2, calibration=rng.standard_normal((12, 8, 7, 7)), padding=1
    )
    assert issubclass(CalibrationWarning, UserWarning)


def _outlier_case(d=64, seed=0):
    """A weight with a decaying spectrum; one input channel with 100x the standard deviation:
    nearly all of E||W x||^2 comes from that one channel."""
    g = np.random.default_rng(seed)
    Q1, _ = np.linalg.qr(g.standard_normal((d, d)))
    Q2, _ = np.linalg.qr(g.standard_normal((d, d)))
    W = (Q1 * np.arange(1, d + 1) ** -0.5) @ Q2.T
    X = g.standard_normal((8 * d, d))
    X[:, 7] *= 100.0
    return W, X


def test_energy_with_outlier_channel_is_floored():
    W, X = _outlier_case()
    A = W @ np.linalg.cholesky(X.T @ X / len(X) + 1e-6 * np.eye(len(W)))
    assert lrkernels.rank.by_energy(A, 0.9).rank == 1  # the collapse the floor prevents
    weight_only = lrkernels.rank.by_energy(W, 0.9).rank
    layer = lrkernels.LowRankLinear.from_dense(W, energy=0.9, calibration=X)
    c = layer.rank_choice
    assert c.rank == -(-weight_only // 2) > 1
    assert c.details["data_rank"] == 1 and c.details["weight_only_rank"] == weight_only
    assert "energy floor" in c.reason


def test_energy_floor_leaves_normal_cases_alone(rng):
    W = rng.standard_normal((40, 30)) * np.arange(1, 31) ** -0.5
    X = rng.standard_normal((400, 30))  # isotropic inputs: the data-aware rank is the usual one
    c = lrkernels.LowRankLinear.from_dense(W, energy=0.9, calibration=X).rank_choice
    A = W @ np.linalg.cholesky(X.T @ X / len(X) + 1e-6 * np.eye(30))
    assert c.rank == c.details["data_rank"] == lrkernels.rank.by_energy(A, 0.9).rank
    assert "energy floor" not in c.reason
    assert lrkernels.LowRankLinear.from_dense(W, energy=0.9).rank_choice.rank == (
        lrkernels.rank.by_energy(W, 0.9).rank
    )
    T = rng.standard_normal((8, 6, 3, 3))
    imgs = rng.standard_normal((20, 6, 8, 8))
    c = lrkernels.TuckerConv2d.from_dense(T, energy=0.8, calibration=imgs, padding=1).rank_choice
    assert all(r >= -(-w // 2) for r, w in zip(c.rank, c.details["weight_only_rank"]))


def test_tucker_energy_outlier_channel_is_floored(rng):
    T = rng.standard_normal((32, 32, 1, 1))
    imgs = rng.standard_normal((8, 32, 8, 8))
    imgs[:, 3] *= 100.0
    c = decompose.tucker2_factors(T, energy=0.9, calibration=imgs)[3]  # no RankWarning: floored
    assert c.details["data_rank"][0] == 1  # one input direction holds the output energy
    assert c.rank[0] == -(-c.details["weight_only_rank"][0] // 2) > 1


def test_tiny_energy_rank_warns(rng):
    u, v = rng.standard_normal((64, 1)), rng.standard_normal((1, 48))
    W = u @ v + 1e-3 * rng.standard_normal((64, 48))
    with pytest.warns(RankWarning, match="energy= chose rank 1 of at most 48"):
        lrkernels.LowRankLinear.from_dense(W, energy=0.9)
    lrkernels.LowRankLinear.from_dense(W, rank=1)  # a given rank is the user's: no warning
    lrkernels.LowRankLinear.from_dense(W[:8, :8], energy=0.9)  # small layers: no warning
