"""The float64 oracles `reference.conv2d` and `reference.tucker_conv2d` are checked themselves:
against a brute-force loop, scipy.signal.correlate2d and (where installed) torch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lrk_testing import LAYOUTS, conv_output_hw, pair
from lrkernels import reference

# Small geometries: (N, Cin, Cout, (H, W), kernel, stride, padding, dilation)
TINY = [
    (1, 1, 1, (4, 5), (3, 3), 1, 0, 1),
    (2, 3, 2, (5, 4), (3, 3), 1, 1, 1),
    (1, 2, 3, (6, 7), (2, 3), (2, 1), (1, 0), 1),
    (2, 2, 2, (7, 6), (3, 2), 2, (0, 2), (2, 1)),
    (1, 3, 1, (5, 5), (1, 1), 1, 0, 1),
    (1, 1, 2, (1, 1), (3, 3), 1, 1, 1),  # 1x1 input, output 1x1
    (1, 2, 2, (1, 1), (1, 1), 1, 3, 1),  # padding only: an output ring of bias only
    (2, 1, 1, (3, 4), (3, 3), (1, 2), 4, 1),  # padding larger than the kernel
    (1, 2, 1, (7, 7), (3, 3), 1, 0, 3),  # dilated kernel exactly as large as the input
    (1, 2, 3, (9, 8), (3, 5), 3, 2, (2, 1)),
    (1, 1, 1, (5, 6), (5, 1), (1, 3), (2, 0), 1),
]
TINY_IDS = [f"case{i}" for i in range(len(TINY))]


def brute_force_conv2d(x, w, b, stride, padding, dilation):
    """Seven nested loops over NCHW float64 data, reading out-of-range pixels as zero."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    n_, cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    ho, wo = conv_output_hw((h, wd), (kh, kw), stride, padding, dilation)
    y = np.zeros((n_, cout, ho, wo))
    for n in range(n_):
        for o in range(cout):
            for i in range(ho):
                for j in range(wo):
                    acc = 0.0 if b is None else float(b[o])
                    for c in range(cin):
                        for ky in range(kh):
                            for kx in range(kw):
                                r = i * sh + ky * dh - ph
                                s = j * sw + kx * dw - pw
                                if 0 <= r < h and 0 <= s < wd:
                                    acc += x[n, c, r, s] * w[o, c, ky, kx]
                    y[n, o, i, j] = acc
    return y


def _tiny(rng, case, bias=True):
    n, cin, cout, hw, k, stride, padding, dilation = case
    x = rng.standard_normal((n, cin) + hw)
    w = rng.standard_normal((cout, cin) + pair(k))
    b = rng.standard_normal(cout) if bias else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation)


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("case", TINY, ids=TINY_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_conv2d_matches_brute_force(rng, case, bias):
    x, w, b, geo = _tiny(rng, case, bias)
    expected = brute_force_conv2d(x, w, b, **geo)
    y = reference.conv2d(x, w, b, **geo)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    y_nhwc = reference.conv2d(_nhwc(x), w, b, layout="NHWC", **geo)
    np.testing.assert_allclose(y_nhwc, _nhwc(expected), rtol=1e-12, atol=1e-12)


def _dilate_kernel(k2d, dh, dw):
    kh, kw = k2d.shape
    out = np.zeros((dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    out[::dh, ::dw] = k2d
    return out


@pytest.mark.parametrize("case", TINY, ids=TINY_IDS)
def test_conv2d_matches_scipy_correlate2d(rng, case):
    signal = pytest.importorskip("scipy.signal")
    x, w, b, geo = _tiny(rng, case)
    (sh, sw), (ph, pw), (dh, dw) = (pair(geo[k]) for k in ("stride", "padding", "dilation"))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n_, cout = x.shape[0], w.shape[0]
    ho, wo = conv_output_hw(x.shape[2:], w.shape[2:], **geo)
    expected = np.zeros((n_, cout, ho, wo))
    for n, o in itertools.product(range(n_), range(cout)):
        full = sum(
            signal.correlate2d(xp[n, c], _dilate_kernel(w[o, c], dh, dw), mode="valid")
            for c in range(x.shape[1])
        )
        expected[n, o] = full[::sh, ::sw] + b[o]
    np.testing.assert_allclose(reference.conv2d(x, w, b, **geo), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", TINY, ids=TINY_IDS)
def test_conv2d_matches_torch(rng, case):
    torch = pytest.importorskip("torch")
    x, w, b, geo = _tiny(rng, case)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(w),
        torch.from_numpy(b),
        stride=pair(geo["stride"]),
        padding=pair(geo["padding"]),
        dilation=pair(geo["dilation"]),
    ).numpy()
    np.testing.assert_allclose(reference.conv2d(x, w, b, **geo), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", TINY, ids=TINY_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tucker_conv2d_is_a_conv_with_the_merged_weight(rng, case, layout):
    """first has no bias, so padding the 1x1 output equals padding x: one conv with W_eff."""
    n, cin, cout, hw, k, stride, padding, dilation = case
    r_in, r_out = 2, 3
    x = rng.standard_normal((n, cin) + hw)
    first = rng.standard_normal((r_in, cin))
    core = rng.standard_normal((r_out, r_in) + pair(k))
    last = rng.standard_normal((cout, r_out))
    b = rng.standard_normal(cout)
    geo = dict(stride=stride, padding=padding, dilation=dilation)
    w_eff = np.einsum("os,srhw,rc->ochw", last, core, first)
    expected = brute_force_conv2d(x, w_eff, b, **geo)
    if layout == "NHWC":
        x, expected = _nhwc(x), _nhwc(expected)
    y = reference.tucker_conv2d(x, first, core, last, b, layout=layout, **geo)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    # ... and the three stages one after the other through reference.conv2d.
    t = reference.conv2d(x, first[:, :, None, None], layout=layout)
    u = reference.conv2d(t, core, layout=layout, **geo)
    staged = reference.conv2d(u, last[:, :, None, None], b, layout=layout)
    np.testing.assert_allclose(y, staged, rtol=1e-12, atol=1e-12)


def test_output_shapes_follow_the_formula(rng):
    for hw, k, s, p, d in itertools.product(
        [(1, 1), (5, 8), (7, 6)], [(1, 1), (3, 3), (2, 5)], [1, 2, 3], [0, 1, (2, 0)], [1, 2]
    ):
        ho, wo = conv_output_hw(hw, k, s, p, d)
        x = rng.standard_normal((2, 3) + hw)
        w = rng.standard_normal((4, 3) + k)
        geo = dict(stride=s, padding=p, dilation=d)
        if min(ho, wo) < 1:
            with pytest.raises(ValueError, match="output size"):
                reference.conv2d(x, w, **geo)
            continue
        assert reference.conv2d(x, w, **geo).shape == (2, 4, ho, wo)
        assert reference.conv2d(_nhwc(x), w, layout="NHWC", **geo).shape == (2, ho, wo, 4)
        for a, size, kk, ss, pp, dd in zip((ho, wo), hw, k, pair(s), pair(p), pair(d)):
            assert a == reference.output_size(size, kk, ss, pp, dd)
            assert a == (size + 2 * pp - dd * (kk - 1) - 1) // ss + 1


def test_int_and_pair_arguments_agree(rng):
    x = rng.standard_normal((1, 2, 9, 9))
    w = rng.standard_normal((3, 2, 3, 3))
    a = reference.conv2d(x, w, stride=2, padding=1, dilation=2)
    b = reference.conv2d(x, w, stride=(2, 2), padding=[1, 1], dilation=np.array([2, 2]))
    np.testing.assert_array_equal(a, b)
    c = reference.conv2d(x, w, stride=np.int64(2), padding=np.int32(1), dilation=2)
    np.testing.assert_array_equal(a, c)


def test_inputs_are_not_modified_and_any_float_layout_works(rng):
    x = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3))
    x0 = x.copy()
    view = x[:, ::2]  # non-contiguous channels
    y = reference.conv2d(view, w, padding=1)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_allclose(y, reference.conv2d(np.ascontiguousarray(view), w, padding=1))
    y16 = reference.conv2d(view.astype(np.float16), w.tolist(), padding=1)
    assert y16.dtype == np.float64 and y16.shape == y.shape


# --------------------------------------------------------------------------------------------
# Argument checking (the reference is public API)
# --------------------------------------------------------------------------------------------

X = np.ones((2, 3, 5, 5))
W = np.ones((4, 3, 3, 3))


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(x=np.ones((2, 2, 5, 5))), "(2, 2, 5, 5)"),
        (dict(x=np.ones((3, 5, 5))), "(3, 5, 5)"),
        (dict(x=np.ones((2, 3, 5, 5)), layout="NHWC"), "(2, 3, 5, 5)"),
        (dict(layout="NWHC"), "NWHC"),
        (dict(weight=np.ones((4, 3, 3))), "(4, 3, 3)"),
        (dict(weight=np.ones((0, 3, 3, 3))), "(0, 3, 3, 3)"),
        (dict(bias=np.ones(3)), "(3,)"),
        (dict(bias=np.ones((1, 4))), "(1, 4)"),
        (dict(x=np.ones((1, 3, 1, 1))), "(1, 3, 1, 1)"),
        (dict(x=np.ones((1, 3, 6, 6)), dilation=3), "(1, 3, 6, 6)"),
        (dict(padding=-1), "padding"),
        (dict(padding=(0, -1)), "padding"),
        (dict(stride=0), "stride"),
        (dict(stride=(1, -2)), "stride"),
        (dict(dilation=0), "dilation"),
        (dict(stride=(1, 2, 3)), "stride"),
    ],
)
def test_conv2d_errors(kwargs, text):
    args = dict(x=X, weight=W, bias=None)
    args.update(kwargs)
    with pytest.raises(ValueError) as exc_info:
        reference.conv2d(**args)
    assert text in str(exc_info.value), str(exc_info.value)


@pytest.mark.parametrize(
    "kwargs, texts",
    [
        (dict(first=np.ones((2, 4))), ["(2, 4)", "(2, 3, 5, 5)"]),  # Cin mismatch
        (dict(first=np.ones((3, 3))), ["(3, 3)", "(5, 2, 3, 3)"]),  # R_in mismatch
        (dict(last=np.ones((4, 6))), ["(5, 2, 3, 3)", "(4, 6)"]),  # R_out mismatch
        (dict(first=np.ones(3)), ["(3,)"]),
        (dict(core=np.ones((5, 2, 3))), ["(5, 2, 3)"]),
        (dict(last=np.ones((4, 5, 1, 1))), ["(4, 5, 1, 1)"]),
        (dict(first=np.ones((0, 3)), core=np.ones((5, 0, 3, 3))), ["(0, 3)"]),
        (dict(bias=np.ones(5)), ["(5,)"]),
        (dict(layout="nchw"), ["nchw"]),
    ],
)
def test_tucker_conv2d_errors(kwargs, texts):
    args = dict(
        x=X, first=np.ones((2, 3)), core=np.ones((5, 2, 3, 3)), last=np.ones((4, 5)), bias=None
    )
    args.update(kwargs)
    with pytest.raises(ValueError) as exc_info:
        reference.tucker_conv2d(**args)
    for text in texts:
        assert text in str(exc_info.value), str(exc_info.value)


def test_type_errors():
    with pytest.raises(TypeError):
        reference.conv2d(X.astype(np.complex128), W)
    with pytest.raises(TypeError):
        reference.conv2d(X, W, stride=1.5)
    with pytest.raises(TypeError):
        reference.conv2d(X, W, padding=True)
    with pytest.raises(TypeError):
        reference.tucker_conv2d(X, np.ones((2, 3)), np.ones((5, 2, 3, 3)), np.full((4, 5), "a"))
