"""lrkernels.decompose: SVD (Eckart-Young), Tucker-2 (HOSVD/HOOI), CP-ALS (recovery, divergence),
the data-aware variants, and the numpy reference of the CP convolution."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lrkernels import decompose, reference
from lrkernels.decompose import ConvergenceWarning


def _orth(rng, n, k=None):
    return np.linalg.qr(rng.standard_normal((n, k or n)))[0]


def _tucker_full(first, core, last):
    f, c, la = (np.asarray(a, np.float64) for a in (first, core, last))
    return np.einsum("os,sryx,rc->ocyx", la, c, f)


def _cp_full(first, vertical, horizontal, last):
    f, v, h, la = (np.asarray(a, np.float64) for a in (first, vertical, horizontal, last))
    return np.einsum("or,ry,rx,rc->ocyx", la, v, h, f)


def _rel(a, b):
    return float(
        np.linalg.norm((np.asarray(a, np.float64) - b).ravel()) / np.linalg.norm(b.ravel())
    )


# --------------------------------------------------------------------------------------------
# SVD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 30), (17, 64), (64, 17), (1, 9), (9, 1), (33, 33)])
def test_svd_error_is_the_tail_bound(rng, shape):
    """Eckart-Young: ||W - U V||_F = sqrt(sum_{i>r} s_i^2), ||W - U V||_2 = s_{r+1}."""
    W = rng.standard_normal(shape)
    s = np.linalg.svd(W, compute_uv=False)
    scale = np.linalg.norm(W)
    for r in sorted(v for v in {1, 2, min(shape) // 2 or 1, min(shape)} if v <= min(shape)):
        U, V = decompose.svd(W, r)
        assert U.dtype == np.float32 and V.dtype == np.float32
        assert U.shape == (shape[0], r) and V.shape == (r, shape[1])
        E = W - U.astype(np.float64) @ V.astype(np.float64)
        tail = np.sqrt(np.sum(s[r:] ** 2))
        assert abs(np.linalg.norm(E) - tail) <= 1e-5 * scale, (r, np.linalg.norm(E), tail)
        spec = s[r] if r < len(s) else 0.0
        assert abs(np.linalg.norm(E, 2) - spec) <= 1e-5 * scale
        # singular values split evenly: |U[:, i]| = |V[i]| = sqrt(s_i)
        np.testing.assert_allclose(np.linalg.norm(U, axis=0), np.sqrt(s[:r]), rtol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(V, axis=1), np.sqrt(s[:r]), rtol=1e-5)


def test_svd_recovers_low_rank_matrix(rng):
    W = rng.standard_normal((50, 4)) @ rng.standard_normal((4, 70))
    U, V = decompose.svd(W, 4)
    assert _rel(U.astype(np.float64) @ V, W) < 1e-6


def test_svd_is_deterministic(rng):
    W = rng.standard_normal((20, 30))
    a, b = decompose.svd(W, 5), decompose.svd(W.copy(), 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("rank", [0, -1, 21, 2.5, True, None, "3"])
def test_svd_bad_rank(rng, rank):
    with pytest.raises(ValueError):
        decompose.svd(rng.standard_normal((20, 30)), rank)


@pytest.mark.parametrize(
    "W",
    [
        np.zeros((0, 3)),
        np.ones(5),
        np.ones((2, 2, 2)),
        np.array([[1.0, np.nan]]),
        np.array([[1 + 1j]]),
        np.array([["a"]]),
    ],
    ids=["empty", "1-D", "3-D", "nan", "complex", "str"],
)
def test_svd_bad_matrix(W):
    with pytest.raises(ValueError):
        decompose.svd(W, 1)


# --------------------------------------------------------------------------------------------
# Tucker-2
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["hosvd", "hooi"])
@pytest.mark.parametrize(
    "cout,cin,kh,kw,r_in,r_out",
    [
        (10, 8, 3, 3, 3, 4),
        (6, 12, 1, 1, 5, 2),
        (16, 16, 3, 5, 16, 16),
        (7, 5, 2, 1, 1, 1),
        (4, 20, 3, 3, 4, 4),
    ],
)
def test_tucker2_recovers_tucker_tensor(rng, method, cout, cin, kh, kw, r_in, r_out):
    first = rng.standard_normal((r_in, cin))
    core = rng.standard_normal((r_out, r_in, kh, kw))
    last = rng.standard_normal((cout, r_out))
    T = _tucker_full(first, core, last)
    f, c, la, info = decompose.tucker2(T, (r_in, r_out), method=method, return_info=True)
    assert f.shape == (r_in, cin) and c.shape == (r_out, r_in, kh, kw) and la.shape == (cout, r_out)
    assert all(a.dtype == np.float32 for a in (f, c, la))
    assert info["error"] < 1e-10
    assert _rel(_tucker_full(f, c, la), T) < 1e-6


def test_hooi_never_worse_than_hosvd(rng):
    for _ in range(6):
        shape = tuple(int(v) for v in rng.integers(2, 14, size=2)) + (3, 3)
        T = rng.standard_normal(shape) * (1 + np.arange(shape[0]))[:, None, None, None] ** -0.7
        ranks = (int(rng.integers(1, shape[1] + 1)), int(rng.integers(1, shape[0] + 1)))
        *_, hosvd = decompose.tucker2(T, ranks, method="hosvd", return_info=True)
        f, c, la, hooi = decompose.tucker2(T, ranks, method="hooi", return_info=True)
        assert hooi["error"] <= hosvd["error"] + 1e-12, (shape, ranks, hooi, hosvd)
        assert hooi["hosvd_error"] == pytest.approx(hosvd["error"], rel=1e-12, abs=1e-15)
        # the returned float32 factors really have that error
        assert _rel(_tucker_full(f, c, la), T) == pytest.approx(hooi["error"], rel=1e-4, abs=1e-6)


def test_hooi_improves_on_a_generic_tensor(rng):
    T = rng.standard_normal((24, 20, 3, 3))
    *_, info = decompose.tucker2(T, (6, 7), return_info=True)
    assert info["error"] < info["hosvd_error"] - 1e-4
    assert info["stop"] in ("tol", "n_iter_max")
    # n_iter_max=0 is the HOSVD
    *_, info0 = decompose.tucker2(T, (6, 7), n_iter_max=0, return_info=True)
    assert info0["error"] == pytest.approx(info["hosvd_error"], rel=1e-12)


@pytest.mark.parametrize(
    "ranks",
    [(0, 2), (2, 0), (9, 2), (2, 11), (1, 2, 3), (1.5, 2), 0, 11, "a"],
)
def test_tucker2_bad_ranks(rng, ranks):
    with pytest.raises(ValueError):
        decompose.tucker2(rng.standard_normal((10, 8, 3, 3)), ranks)


@pytest.mark.parametrize(
    "kwargs",
    [{"method": "svd"}, {"n_iter_max": -1}, {"tol": -1.0}, {"tol": float("nan")}],
)
def test_tucker2_bad_options(rng, kwargs):
    with pytest.raises(ValueError):
        decompose.tucker2(rng.standard_normal((10, 8, 3, 3)), (2, 2), **kwargs)


def test_tucker2_wrong_weight():
    with pytest.raises(ValueError):
        decompose.tucker2(np.ones((4, 4)), (1, 1))


# --------------------------------------------------------------------------------------------
# CP
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cout,cin,kh,kw,r",
    [(10, 8, 3, 3, 4), (12, 6, 3, 3, 2), (8, 8, 1, 3, 3), (5, 7, 3, 1, 1), (16, 12, 3, 3, 8)],
)
def test_cp_recovers_cp_tensor(rng, cout, cin, kh, kw, r):
    first = rng.standard_normal((r, cin))
    vertical = rng.standard_normal((r, kh))
    horizontal = rng.standard_normal((r, kw))
    last = rng.standard_normal((cout, r))
    T = _cp_full(first, vertical, horizontal, last)
    f, v, h, la, info = decompose.cp(T, r, return_info=True)
    assert (f.shape, v.shape, h.shape, la.shape) == ((r, cin), (r, kh), (r, kw), (cout, r))
    assert all(a.dtype == np.float32 for a in (f, v, h, la))
    assert not info["diverged"]
    assert info["error"] < 1e-6, info["stop"]
    assert _rel(_cp_full(f, v, h, la), T) < 1e-5


def test_cp_seed_determinism(rng):
    T = rng.standard_normal((6, 5, 3, 3))  # rank 7 > kh, kw: the start uses seeded columns
    a = decompose.cp(T, 7, seed=3, n_iter_max=30)
    b = decompose.cp(T, 7, seed=3, n_iter_max=30)
    c = decompose.cp(T, 7, seed=4, n_iter_max=30)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_cp_components_are_balanced(rng):
    T = rng.standard_normal((8, 6, 3, 3))
    f, v, h, la = decompose.cp(T, 5, n_iter_max=50)
    norms = [
        np.linalg.norm(f, axis=1),
        np.linalg.norm(v, axis=1),
        np.linalg.norm(h, axis=1),
        np.linalg.norm(la, axis=0),
    ]
    for n in norms[1:]:
        np.testing.assert_allclose(n, norms[0], rtol=1e-4)


def test_cp_divergence_returns_best_iterate(rng, monkeypatch):
    T = rng.standard_normal((8, 6, 3, 3))
    real = decompose.cp_als._cp_solve
    calls = {"n": 0}

    def failing(G, MT):
        calls["n"] += 1
        out = real(G, MT)
        return out * np.nan if calls["n"] > 4 * 5 else out  # NaN from the 6th sweep on

    monkeypatch.setattr(decompose.cp_als, "_cp_solve", failing)
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        f, v, h, la, info = decompose.cp(T, 4, tol=0.0, return_info=True)
    assert info["diverged"] and len(info["errors"]) == 6
    assert all(np.all(np.isfinite(a)) for a in (f, v, h, la))
    assert info["error"] == pytest.approx(min(info["errors"][:5]))
    assert _rel(_cp_full(f, v, h, la), T) == pytest.approx(info["error"], rel=1e-4)


def test_cp_rising_error_is_divergence(rng, monkeypatch):
    T = rng.standard_normal((8, 6, 3, 3))
    real = decompose.cp_als._cp_solve
    calls = {"n": 0}

    def noisy(G, MT):  # from sweep 4 on, each update is worse than the last
        calls["n"] += 1
        out = real(G, MT)
        sweep = (calls["n"] - 1) // 4
        return out * (1 + 0.5 * max(0, sweep - 2)) if sweep >= 3 else out

    monkeypatch.setattr(decompose.cp_als, "_cp_solve", noisy)
    with pytest.warns(ConvergenceWarning, match="rose"):
        *_, info = decompose.cp(T, 4, tol=0.0, return_info=True)
    assert info["diverged"]
    assert info["error"] == pytest.approx(min(info["errors"]))


@pytest.mark.parametrize("rank", [0, 1.5, 10 * 8 * 9 + 1, True])
def test_cp_bad_rank(rng, rank):
    with pytest.raises(ValueError):
        decompose.cp(rng.standard_normal((10, 8, 3, 3)), rank)


# --------------------------------------------------------------------------------------------
# numpy reference of CPConv2d
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(
    "kernel,stride,padding,dilation",
    [
        ((3, 3), 1, 0, 1),
        ((3, 3), 1, 1, 1),
        ((3, 2), (2, 1), (1, 2), (1, 2)),
        ((5, 1), 3, (0, 3), 2),
        ((1, 1), 2, 0, 1),
    ],
)
def test_cp_conv2d_reference_is_the_dense_convolution(
    rng, layout, kernel, stride, padding, dilation
):
    r, cin, cout = 3, 4, 5
    first = rng.standard_normal((r, cin))
    vertical = rng.standard_normal((r, kernel[0]))
    horizontal = rng.standard_normal((r, kernel[1]))
    last = rng.standard_normal((cout, r))
    bias = rng.standard_normal(cout)
    shape = (2, cin, 11, 9) if layout == "NCHW" else (2, 11, 9, cin)
    x = rng.standard_normal(shape)
    y = reference.cp_conv2d(
        x, first, vertical, horizontal, last, bias, stride, padding, dilation, layout
    )
    W = _cp_full(first, vertical, horizontal, last)
    expected = reference.conv2d(x, W, bias, stride, padding, dilation, layout)
    assert y.dtype == np.float64 and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_cp_conv2d_reference_errors(rng):
    f, v, h, la = (rng.standard_normal(s) for s in [(3, 4), (3, 3), (3, 3), (5, 3)])
    x = rng.standard_normal((1, 4, 6, 6))
    with pytest.raises(ValueError, match="rank mismatch"):
        reference.cp_conv2d(x, f, v[:2], h, la)
    with pytest.raises(ValueError, match="channels"):
        reference.cp_conv2d(rng.standard_normal((1, 3, 6, 6)), f, v, h, la)
    with pytest.raises(ValueError, match="output size"):
        reference.cp_conv2d(rng.standard_normal((1, 4, 2, 2)), f, v, h, la)
    with pytest.raises(ValueError, match="bias"):
        reference.cp_conv2d(x, f, v, h, la, np.ones(4))
    with pytest.raises(ValueError, match="layout"):
        reference.cp_conv2d(x, f, v, h, la, layout="CHWN")
    with pytest.raises(ValueError):
        reference.cp_conv2d(x, f, v, h, la, stride=0)


# --------------------------------------------------------------------------------------------
# data-aware factorization: lower output error than weight-only at the same rank
# --------------------------------------------------------------------------------------------


def _slow_spectrum_matrix(rng, out, inp, power=0.3):
    """A 'pretrained-like' weight: singular values decaying slowly, s_i = i^-power."""
    k = min(out, inp)
    s = (1.0 + np.arange(k)) ** -power
    return (_orth(rng, out)[:, :k] * s) @ _orth(rng, inp)[:k]


def _correlated_rows(rng, n, d, basis, power=1.0):
    return (rng.standard_normal((n, d)) * (1.0 + np.arange(d)) ** (-power / 2)) @ basis


def test_data_aware_svd_beats_weight_only(rng):
    out, inp = 64, 96
    W = _slow_spectrum_matrix(rng, out, inp)
    basis = _orth(rng, inp)
    X = _correlated_rows(rng, 800, inp, basis, 2.0)  # calibration
    Xt = _correlated_rows(rng, 800, inp, basis, 2.0)  # held out
    for r in (4, 12, 24):
        plain = decompose.svd(W, r)
        aware = decompose.svd(W, r, calibration=X)

        def out_err(UV):
            D = W - UV[0].astype(np.float64) @ UV[1]
            return np.linalg.norm(Xt @ D.T) / np.linalg.norm(Xt @ W.T)

        e_plain, e_aware = out_err(plain), out_err(aware)
        assert e_aware < 0.75 * e_plain, (r, e_plain, e_aware)
        # ... and the weight error is the price: it is not below the optimum
        assert np.linalg.norm(W - aware[0].astype(np.float64) @ aware[1]) >= np.linalg.norm(
            W - plain[0].astype(np.float64) @ plain[1]
        ) * (1 - 1e-6)


def test_data_aware_svd_is_optimal_on_the_calibration_data(rng):
    """min ||(W - W_r) X^T||_F over rank-r W_r is the truncated SVD of W X^T."""
    W = rng.standard_normal((20, 30))
    X = rng.standard_normal((100, 30)) @ rng.standard_normal((30, 30))
    U, V = decompose.svd(W, 5, calibration=X, reg=1e-12)
    s = np.linalg.svd(W @ X.T, compute_uv=False)
    err = np.linalg.norm((W - U.astype(np.float64) @ V) @ X.T)
    assert err == pytest.approx(np.sqrt(np.sum(s[5:] ** 2)), rel=1e-4)


def _conv_weight(rng, cout, cin, k, power=0.3):
    M = _slow_spectrum_matrix(rng, cout, cin * k * k, power)
    return M.reshape(cout, cin, k, k)


def _correlated_images(rng, n, cin, hw, basis, power=2.0):
    z = rng.standard_normal((n, hw, hw, cin)) * (1.0 + np.arange(cin)) ** (-power / 2)
    z = z @ basis.T
    z = (z + np.roll(z, 1, axis=1) + np.roll(z, 1, axis=2)) / 3.0  # spatial correlation too
    return np.ascontiguousarray(z.transpose(0, 3, 1, 2))


def _conv_out_err(T, That, X, padding):
    y = reference.conv2d(X, T, padding=padding)
    return np.linalg.norm(reference.conv2d(X, That, padding=padding) - y) / np.linalg.norm(y)


def test_data_aware_tucker2_and_cp_beat_weight_only(rng):
    cout, cin, k = 24, 16, 3
    T = _conv_weight(rng, cout, cin, k)
    basis = _orth(rng, cin)
    X = _correlated_images(rng, 12, cin, 10, basis)
    Xt = _correlated_images(rng, 12, cin, 10, basis)
    for ranks in [(4, 6), (8, 12)]:
        plain = _tucker_full(*decompose.tucker2(T, ranks))
        f, c, la, info = decompose.tucker2(T, ranks, calibration=X, padding=1, return_info=True)
        aware = _tucker_full(f, c, la)
        e_plain, e_aware = _conv_out_err(T, plain, Xt, 1), _conv_out_err(T, aware, Xt, 1)
        assert e_aware < 0.75 * e_plain, (ranks, e_plain, e_aware)
        assert info["output_error"] == pytest.approx(_conv_out_err(T, aware, X, 1), rel=1e-3)
    r = 10
    plain = _cp_full(*decompose.cp(T, r, n_iter_max=100))
    aware = _cp_full(*decompose.cp(T, r, n_iter_max=100, calibration=X, padding=1))
    e_plain, e_aware = _conv_out_err(T, plain, Xt, 1), _conv_out_err(T, aware, Xt, 1)
    assert e_aware < 0.75 * e_plain, (e_plain, e_aware)


def test_data_aware_nhwc_equals_nchw(rng):
    T = _conv_weight(rng, 8, 6, 3)
    X = rng.standard_normal((3, 6, 7, 7))
    a = decompose.tucker2(T, (3, 4), calibration=X, stride=2, padding=1)
    b = decompose.tucker2(
        T, (3, 4), calibration=X.transpose(0, 2, 3, 1), stride=2, padding=1, layout="NHWC"
    )
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_calibration_errors(rng):
    W = rng.standard_normal((6, 5))
    with pytest.raises(ValueError, match="features"):
        decompose.svd(W, 2, calibration=np.ones((4, 6)))
    with pytest.raises(ValueError, match="all zero"):
        decompose.svd(W, 2, calibration=np.zeros((4, 5)))
    T = rng.standard_normal((6, 5, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        decompose.tucker2(T, 2, calibration=np.ones((2, 4, 8, 8)))
    with pytest.raises(ValueError, match="output position"):
        decompose.tucker2(T, 2, calibration=np.ones((2, 5, 2, 2)))
    with pytest.raises(ValueError, match="layout"):
        decompose.cp(T, 2, calibration=np.ones((2, 5, 8, 8)), layout="HWC")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decompose.cp(T, 2, calibration=np.ones((2, 5, 8, 8)), n_iter_max=5)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_second_moments(rng, layout):
    X = rng.standard_normal((3, 4, 7, 6))
    Xl = X if layout == "NCHW" else X.transpose(0, 2, 3, 1)
    C = decompose.channel_second_moment(Xl, layout)
    pix = X.transpose(0, 2, 3, 1).reshape(-1, 4)
    np.testing.assert_allclose(C, pix.T @ pix / pix.shape[0], rtol=1e-12)
    np.testing.assert_allclose(decompose.patch_second_moment(Xl, 1, layout=layout), C, rtol=1e-12)
    # E[(w . p)^2] over the patches is the mean squared output of the convolution with w
    w = rng.standard_normal((1, 4, 3, 2))
    Cp = decompose.patch_second_moment(
        Xl, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), layout=layout
    )
    y = reference.conv2d(X, w, stride=(2, 1), padding=1, dilation=(1, 2))
    assert w.ravel() @ Cp @ w.ravel() == pytest.approx(np.mean(y**2), rel=1e-12)
