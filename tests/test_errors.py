"""Argument checking of both layers: exception types and messages that name the offending shapes."""

from __future__ import annotations

import lrkernels
import numpy as np
import pytest

F32 = np.float32


def _ones(shape, dtype=F32):
    return np.ones(shape, dtype=dtype)


@pytest.fixture
def lowrank():
    """LowRankLinear with in_features=4, rank=2, out_features=3."""
    return lrkernels.LowRankLinear(_ones((3, 2)), _ones((2, 4)), _ones(3))


@pytest.fixture
def linear():
    """Linear with in_features=4, out_features=3."""
    return lrkernels.Linear(_ones((3, 4)), _ones(3))


@pytest.fixture(params=["LowRankLinear", "Linear"])
def layer(request, lowrank, linear):
    return lowrank if request.param == "LowRankLinear" else linear


# --------------------------------------------------------------------------------------------
# Bad x
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, shape_text",
    [
        (np.array(1.0, dtype=F32), "()"),
        (_ones((2, 3, 4)), "(2, 3, 4)"),
        (_ones((1, 1, 4)), "(1, 1, 4)"),
        (_ones((2, 5)), "(2, 5)"),
        (_ones((2, 3)), "(2, 3)"),
        (_ones((5,)), "(5,)"),
        (_ones((0,)), "(0,)"),
        (_ones((0, 5)), "(0, 5)"),
        (_ones((4, 2)), "(4, 2)"),  # transposed input
        (np.ones((3, 5), dtype=np.float64), "(3, 5)"),
    ],
    ids=[
        "ndim0",
        "ndim3",
        "ndim3-ones",
        "last-dim-5",
        "last-dim-3",
        "1d-wrong-length",
        "1d-empty",
        "batch0-wrong-in",
        "transposed",
        "float64-wrong-in",
    ],
)
def test_x_bad_shape(layer, x, shape_text):
    with pytest.raises(ValueError) as exc_info:
        layer(x)
    msg = str(exc_info.value)
    assert shape_text in msg, msg
    assert "4" in msg, f"message should name in_features=4: {msg}"


@pytest.mark.parametrize(
    "x, dtype_text",
    [
        (np.ones(4, dtype=np.int64), "int64"),
        (np.ones((2, 4), dtype=np.int32), "int32"),
        (np.ones((2, 4), dtype=np.uint8), "uint8"),
        (np.ones((2, 4), dtype=bool), "bool"),
        (np.ones((2, 4), dtype=np.complex64), "complex64"),
        (np.ones(4, dtype=np.complex128), "complex128"),
        ([1, 2, 3, 4], "int"),
        ([True, False, True, False], "bool"),
        (np.array(["a", "b", "c", "d"]), "U1"),
        (np.array([1.0, None, 2.0, 3.0], dtype=object), "object"),
    ],
    ids=[
        "int64",
        "int32",
        "uint8",
        "bool",
        "complex64",
        "complex128",
        "list-of-ints",
        "list-of-bools",
        "strings",
        "object",
    ],
)
def test_x_bad_dtype(layer, x, dtype_text):
    with pytest.raises(TypeError) as exc_info:
        layer(x)
    assert dtype_text in str(exc_info.value), str(exc_info.value)


def test_x_none(layer):
    with pytest.raises(TypeError):
        layer(None)


def test_x_list_of_floats_works(layer):
    # All-ones weights and bias: LowRankLinear gives 1 + rank * sum(x), Linear 1 + sum(x).
    factor = 2.0 if isinstance(layer, lrkernels.LowRankLinear) else 1.0
    y = layer([0.5, -1.0, 2.0, 0.25])
    assert isinstance(y, np.ndarray) and y.dtype == F32 and y.shape == (3,)
    np.testing.assert_allclose(y, np.full(3, 1.0 + factor * 1.75), rtol=1e-6)
    y = layer([[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]])
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y, [[1.0 + factor * 1.75] * 3, [1.0 + factor * 4.0] * 3], rtol=1e-6)


def test_nan_is_not_an_error(layer):
    y = layer(np.array([np.nan, 1.0, 2.0, 3.0], dtype=F32))
    assert np.isnan(y).all()
    y = layer(np.full((3, 4), np.inf))
    assert (y == np.inf).all()  # not an error either


def test_nan_weights_are_not_an_error():
    layer = lrkernels.LowRankLinear(np.full((3, 2), np.nan), _ones((2, 4)), _ones(3))
    assert np.isnan(layer(_ones(4))).all()
    dense = lrkernels.Linear(np.full((3, 4), np.nan))
    assert np.isnan(dense(_ones((2, 4)))).all()


def test_layer_still_usable_after_errors(layer):
    for bad in (_ones((2, 5)), np.ones(4, dtype=np.int64), np.array(1.0, dtype=F32)):
        with pytest.raises((ValueError, TypeError)):
            layer(bad)
    y = layer(_ones(4))
    assert y.shape == (3,) and np.isfinite(y).all()


# --------------------------------------------------------------------------------------------
# Bad weights: LowRankLinear
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "U, V, bias, shape_texts",
    [
        (_ones((4,)), _ones((2, 4)), None, ["(4,)"]),  # U 1-D
        (_ones((3, 2)), _ones((2, 3, 4)), None, ["(2, 3, 4)"]),  # V 3-D
        (_ones((3, 2, 1)), _ones((2, 4)), None, ["(3, 2, 1)"]),  # U 3-D
        (_ones((3, 2)), _ones((4,)), None, ["(4,)"]),  # V 1-D
        (np.array(1.0, dtype=F32), _ones((2, 4)), None, ["()"]),  # U 0-D
        (_ones((0, 4)), _ones((4, 5)), None, ["(0, 4)"]),  # zero-size U
        (_ones((3, 0)), _ones((0, 4)), None, ["(3, 0)"]),  # rank 0
        (_ones((3, 2)), _ones((2, 0)), None, ["(2, 0)"]),  # zero in_features
        (_ones((3, 4)), _ones((5, 6)), None, ["(3, 4)", "(5, 6)"]),  # rank mismatch
        (_ones((3, 2)), _ones((3, 4)), None, ["(3, 2)", "(3, 4)"]),  # rank mismatch
        (_ones((3, 2)), _ones((2, 4)), _ones(5), ["(5,)", "(3,)"]),  # bias length
        (_ones((3, 2)), _ones((2, 4)), _ones(4), ["(4,)", "(3,)"]),  # bias length = in_features
        (_ones((3, 2)), _ones((2, 4)), _ones(2), ["(2,)", "(3,)"]),  # bias length = rank
        (_ones((3, 2)), _ones((2, 4)), _ones((1, 3)), ["(1, 3)"]),  # bias 2-D
        (_ones((3, 2)), _ones((2, 4)), _ones((3, 1)), ["(3, 1)"]),  # bias 2-D
        (_ones((3, 2)), _ones((2, 4)), np.array(1.0, dtype=F32), ["()"]),  # bias 0-D
        (_ones((3, 2)), _ones((2, 4)), _ones(0), ["(0,)"]),  # empty bias
    ],
    ids=[
        "U-1d",
        "V-3d",
        "U-3d",
        "V-1d",
        "U-0d",
        "U-zero-rows",
        "rank-0",
        "V-zero-cols",
        "rank-mismatch",
        "rank-mismatch-2",
        "bias-len-5",
        "bias-len-in",
        "bias-len-rank",
        "bias-2d-row",
        "bias-2d-col",
        "bias-0d",
        "bias-empty",
    ],
)
def test_lowrank_bad_shapes(U, V, bias, shape_texts):
    with pytest.raises(ValueError) as exc_info:
        lrkernels.LowRankLinear(U, V, bias)
    msg = str(exc_info.value)
    for text in shape_texts:
        assert text in msg, f"{text!r} not in {msg!r}"


@pytest.mark.parametrize(
    "which, dtype",
    [
        (w, d)
        for w in ("U", "V", "bias")
        for d in (np.int64, np.int32, bool, np.complex64, np.complex128)
    ],
    ids=lambda v: v if isinstance(v, str) else np.dtype(v).name,
)
def test_lowrank_bad_dtypes(which, dtype):
    args = {"U": _ones((3, 2)), "V": _ones((2, 4)), "bias": _ones(3)}
    args[which] = args[which].astype(dtype)
    with pytest.raises(TypeError) as exc_info:
        lrkernels.LowRankLinear(**args)
    msg = str(exc_info.value)
    assert np.dtype(dtype).name in msg, msg
    assert which in msg, msg


def test_lowrank_complex_weights_with_zero_imaginary_part():
    """Complex weights are rejected even when every imaginary part is zero (no silent discard)."""
    with pytest.raises(TypeError):
        lrkernels.LowRankLinear(_ones((3, 2)).astype(np.complex128), _ones((2, 4)))


def test_lowrank_missing_arguments():
    with pytest.raises(TypeError):
        lrkernels.LowRankLinear(_ones((3, 2)))
    with pytest.raises(TypeError):
        lrkernels.LowRankLinear(None, _ones((2, 4)))


# --------------------------------------------------------------------------------------------
# Bad weights: Linear
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "W, bias, shape_texts",
    [
        (_ones((4,)), None, ["(4,)"]),
        (_ones((2, 3, 4)), None, ["(2, 3, 4)"]),
        (np.array(1.0, dtype=F32), None, ["()"]),
        (_ones((0, 4)), None, ["(0, 4)"]),
        (_ones((3, 0)), None, ["(3, 0)"]),
        (_ones((3, 4)), _ones(4), ["(4,)", "(3,)"]),
        (_ones((3, 4)), _ones(2), ["(2,)", "(3,)"]),
        (_ones((3, 4)), _ones((1, 3)), ["(1, 3)"]),
        (_ones((3, 4)), _ones((3, 1)), ["(3, 1)"]),
        (_ones((3, 4)), _ones(0), ["(0,)"]),
    ],
    ids=[
        "W-1d",
        "W-3d",
        "W-0d",
        "W-zero-rows",
        "W-zero-cols",
        "bias-len-in",
        "bias-len-2",
        "bias-2d-row",
        "bias-2d-col",
        "bias-empty",
    ],
)
def test_linear_bad_shapes(W, bias, shape_texts):
    with pytest.raises(ValueError) as exc_info:
        lrkernels.Linear(W, bias)
    msg = str(exc_info.value)
    for text in shape_texts:
        assert text in msg, f"{text!r} not in {msg!r}"


@pytest.mark.parametrize(
    "which, dtype",
    [(w, d) for w in ("W", "bias") for d in (np.int64, bool, np.complex64, np.complex128)],
    ids=lambda v: v if isinstance(v, str) else np.dtype(v).name,
)
def test_linear_bad_dtypes(which, dtype):
    args = {"W": _ones((3, 4)), "bias": _ones(3)}
    args[which] = args[which].astype(dtype)
    with pytest.raises(TypeError) as exc_info:
        lrkernels.Linear(**args)
    msg = str(exc_info.value)
    assert np.dtype(dtype).name in msg and which in msg, msg


def test_linear_list_weights_of_ints_rejected():
    with pytest.raises(TypeError):
        lrkernels.Linear([[1, 2], [3, 4]])
