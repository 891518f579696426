"""The Python API of every layer kind, generated from the layer table (layer_table.py):
read-only float32 factor properties, copies of the constructor's arrays, defaults, and the
argument checks (exception type, and a message naming the argument and the offending shape or
dtype; asserted loosely, not word for word). ISA-independent, so not run per ISA. The numerical
conformance is in test_conformance.py; what only one kind has stays in its own file.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from layer_table import CONV_KINDS, KINDS, LAYOUTS, N_RANKS, SPEC
from lrk_testing import CONV_DEFAULTS, image_shape, raises

F32 = np.float32
CIN, COUT, RANKS, KERNEL = 4, 3, (2, 5), (3, 3)


def factor_shapes(kind):
    """The factor shapes of a small layer (Cin 4, Cout 3, ranks (2, 5), 3x3), then the bias's."""
    spec = SPEC[kind]
    ranks = RANKS[: N_RANKS[kind]]
    return list(spec.factor_shapes(CIN, COUT, ranks, KERNEL if spec.conv else (1, 1))) + [(COUT,)]


def arg_names(kind):
    return SPEC[kind].factor_names + ("bias",)


def ones_args(kind, dtype=F32) -> dict:
    return {n: np.ones(s, dtype) for n, s in zip(arg_names(kind), factor_shapes(kind))}


def random_args(rng, kind) -> dict:
    return {n: rng.standard_normal(s) for n, s in zip(arg_names(kind), factor_shapes(kind))}


def good_input(kind, layout="NCHW", batch=2):
    """An all-ones input; with all-ones factors every output is 1 + prod(ranks) * Cin kh kw."""
    if SPEC[kind].conv:
        return np.ones(image_shape(batch, CIN, (3, 3), layout), F32)
    return np.ones((batch, CIN), F32)


def expected_ones_output(kind):
    spec = SPEC[kind]
    taps = CIN * (KERNEL[0] * KERNEL[1] if spec.conv else 1)
    return 1.0 + float(np.prod(RANKS[: N_RANKS[kind]])) * taps


def layer_for(kind, layout="NCHW", **kwargs):
    geometry = {"layout": layout} if SPEC[kind].conv else {}
    return SPEC[kind].cls(**ones_args(kind), **geometry, **kwargs)


def assert_still_usable(layer, kind, layout="NCHW"):
    y = layer(good_input(kind, layout))
    np.testing.assert_array_equal(y, np.full_like(y, expected_ones_output(kind)))


every_kind = pytest.mark.parametrize("kind", KINDS)
every_conv = pytest.mark.parametrize("kind", CONV_KINDS)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@every_kind
def test_factor_properties_are_read_only_float32_arrays(rng, kind):
    spec = SPEC[kind]
    args = random_args(rng, kind)
    layer = spec.cls(**args)
    for name, src in args.items():
        a = getattr(layer, name)
        assert isinstance(a, np.ndarray) and a.dtype == F32 and a.shape == src.shape, name
        np.testing.assert_array_equal(a, src.astype(F32), name)
        assert not a.flags.writeable, name
        with pytest.raises(ValueError):
            a[...] = 0.0
        with pytest.raises(ValueError):
            a.setflags(write=True)
        with pytest.raises(AttributeError):
            setattr(layer, name, src)
    scalars = [
        n
        for n in dir(layer)
        if not n.startswith("_") and n not in args and not callable(getattr(layer, n))
    ]
    assert scalars, "no scalar properties"
    for name in scalars:
        with pytest.raises(AttributeError):
            setattr(layer, name, getattr(layer, name))
    for name, src in args.items():  # unchanged by the attempts
        np.testing.assert_array_equal(getattr(layer, name), src.astype(F32), name)


@every_kind
def test_no_bias(kind):
    args = ones_args(kind)
    factors = [args[n] for n in SPEC[kind].factor_names]
    assert SPEC[kind].cls(*factors).bias is None
    assert SPEC[kind].cls(*factors, None).bias is None
    assert SPEC[kind].cls(*factors, bias=None).bias is None


@every_kind
def test_factors_are_copied_and_views_outlive_the_layer(rng, kind):
    """Changing the constructor's arrays afterwards changes neither properties nor results; the
    property views keep the layer's data alive after the layer is gone."""
    spec = SPEC[kind]
    args = {n: a.astype(F32) for n, a in random_args(rng, kind).items()}
    copies = {n: a.copy() for n, a in args.items()}
    layer = spec.cls(**args)
    x = good_input(kind)
    y0 = layer(x)
    for a in args.values():
        a[...] = 3.0
    for name in args:
        np.testing.assert_array_equal(getattr(layer, name), copies[name], name)
        assert not np.shares_memory(getattr(layer, name), args[name]), name
    np.testing.assert_array_equal(layer(x), y0)
    views = {n: getattr(layer, n) for n in args}
    del layer
    gc.collect()
    for _ in range(3):  # churn the allocator
        spec.cls(**ones_args(kind))
    for name, view in views.items():
        np.testing.assert_array_equal(view, copies[name], name)


@every_conv
def test_geometry_properties_and_defaults(kind):
    spec = SPEC[kind]
    layer = spec.cls(**ones_args(kind))
    for name, default in CONV_DEFAULTS.items():
        value = getattr(layer, name)
        assert value == (default if name == "layout" else (default, default)), (name, value)
    layer = spec.cls(
        **ones_args(kind), stride=[3, 2], padding=(0, 2), dilation=np.int64(2), layout="NHWC"
    )
    assert (layer.stride, layer.padding, layer.dilation) == ((3, 2), (0, 2), (2, 2))
    assert layer.layout == "NHWC" and layer.kernel_size == KERNEL
    assert (layer.in_channels, layer.out_channels) == (CIN, COUT)
    for name in ("kernel_size", "stride", "padding", "dilation"):
        value = getattr(layer, name)
        assert isinstance(value, tuple) and len(value) == 2, (name, value)
        assert all(type(v) is int for v in value), (name, value)


@every_kind
def test_repr_names_the_kind_and_its_shapes(kind):
    text = repr(layer_for(kind))
    assert text.startswith(kind), text
    for value in (CIN, COUT) + RANKS[: N_RANKS[kind]]:
        assert str(value) in text, text
    args = ones_args(kind)
    args["bias"] = None
    assert repr(SPEC[kind].cls(**args)) != text


# --------------------------------------------------------------------------------------------
# Bad x
# --------------------------------------------------------------------------------------------


def bad_shapes(kind, layout):
    """Input shapes of a wrong ndim, a wrong in_features / channel count, or (convolutions) too
    small for the 3x3 kernel."""
    if not SPEC[kind].conv:
        return [
            (),
            (2, 3, CIN),
            (1, 1, CIN),
            (2, CIN + 1),
            (2, CIN - 1),
            (CIN + 1,),
            (0,),
            (0, CIN + 1),
            (CIN, 2),
        ]
    other = "NHWC" if layout == "NCHW" else "NCHW"
    return [
        image_shape(2, CIN - 1, (5, 5), layout),  # 3 channels, the layer expects 4
        image_shape(2, CIN, (5, 5), other),  # the other layout's image
        image_shape(2, CIN, (5, 5), layout)[1:],  # ndim 3
        (1,) + image_shape(2, CIN, (5, 5), layout),  # ndim 5
        (5, CIN),  # ndim 2
        image_shape(1, CIN, (1, 1), layout),  # 3x3 on 1x1 without padding: output 0x0
        image_shape(1, CIN, (5, 2), layout),  # the width only too small
        image_shape(3, CIN, (2, 9), layout),  # the height only too small
    ]


@pytest.mark.parametrize(
    "kind, layout",
    [(k, layout) for k in KINDS for layout in (LAYOUTS if SPEC[k].conv else ("NCHW",))],
)
def test_x_bad_shape(kind, layout):
    """ValueError naming x's shape; the layer stays usable."""
    layer = layer_for(kind, layout)
    for shape in bad_shapes(kind, layout):
        with raises(ValueError, str(shape)):
            layer(np.ones(shape, F32))
    assert_still_usable(layer, kind, layout)


@every_conv
def test_x_too_small_for_the_dilated_kernel(kind):
    layer = layer_for(kind, dilation=3)
    with raises(ValueError, "(1, 4, 6, 7)"):
        layer(np.ones((1, CIN, 6, 7), F32))
    assert layer(np.ones((1, CIN, 7, 7), F32)).shape == (1, COUT, 1, 1)  # exactly fits


X_OF_A_BAD_DTYPE = {  # id: (x from a good input, a text the message must hold)
    **{
        np.dtype(d).name: (lambda x, d=d: x.astype(d), np.dtype(d).name)
        for d in (np.int64, np.int32, np.uint8, bool, np.complex64, np.complex128, object)
    },
    "list-of-ints": (lambda x: x.astype(int).tolist(), "int"),
    "list-of-bools": (lambda x: x.astype(bool).tolist(), "bool"),
    "strings": (lambda x: x.astype(int).astype("U1"), "U1"),
}


@every_kind
@pytest.mark.parametrize("what", X_OF_A_BAD_DTYPE)
def test_x_bad_dtype(kind, what):
    """TypeError naming the dtype; the layer stays usable."""
    make, text = X_OF_A_BAD_DTYPE[what]
    layer = layer_for(kind)
    with raises(TypeError, text):
        layer(make(good_input(kind)))
    assert_still_usable(layer, kind)


@every_kind
def test_x_missing_or_not_an_array(kind):
    layer = layer_for(kind)
    for bad in (None, "abc", {"a": 1}):
        with pytest.raises(TypeError):
            layer(bad)
    with pytest.raises(TypeError):
        layer()
    assert_still_usable(layer, kind)


# --------------------------------------------------------------------------------------------
# Bad factors and bias
# --------------------------------------------------------------------------------------------


def _wrong_shapes(shape):
    """One more axis, one axis fewer, a 0-d array, and each axis empty in turn."""
    yield shape + (1,)
    yield shape[:-1]
    if len(shape) > 1:
        yield ()
    for axis in range(len(shape)):
        yield shape[:axis] + (0,) + shape[axis + 1 :]


@every_kind
def test_factor_of_a_wrong_ndim_or_empty(kind):
    """ValueError naming the argument's shape."""
    cases = 0
    for name, shape in zip(arg_names(kind), factor_shapes(kind)):
        for bad in _wrong_shapes(shape):
            args = ones_args(kind)
            args[name] = np.ones(bad, F32)
            with raises(ValueError, str(bad)):
                SPEC[kind].cls(**args)
            cases += 1
    assert cases == sum(len(s) + 2 + (len(s) > 1) for s in factor_shapes(kind))


@every_kind
def test_bias_of_a_wrong_length(kind):
    for length in (COUT - 1, COUT + 1, CIN, RANKS[0]):
        if length == COUT:
            continue
        args = ones_args(kind)
        args["bias"] = np.ones(length, F32)
        with raises(ValueError, f"({length},)", f"({COUT},)"):
            SPEC[kind].cls(**args)


@every_kind
@pytest.mark.parametrize(
    "dtype", [np.int64, np.int32, bool, np.complex64, np.complex128, "list of ints"], ids=str
)
def test_factor_bad_dtype(kind, dtype):
    """TypeError naming the argument and the dtype, for each factor and the bias. Complex
    factors are refused even with every imaginary part zero (no silent discard)."""
    for name in arg_names(kind):
        args = ones_args(kind)
        if dtype == "list of ints":
            args[name], text = args[name].astype(int).tolist(), "int"
        else:
            args[name], text = args[name].astype(dtype), np.dtype(dtype).name
        with raises(TypeError, name, text):
            SPEC[kind].cls(**args)


@every_kind
def test_missing_arguments(kind):
    spec = SPEC[kind]
    factors = [ones_args(kind)[n] for n in spec.factor_names]
    with pytest.raises(TypeError):
        spec.cls()
    with pytest.raises(TypeError):
        spec.cls(None, *factors[1:])
    if len(factors) > 1:
        with pytest.raises(TypeError):
            spec.cls(*factors[:-1])
    if spec.conv:  # the geometry is keyword-only
        with pytest.raises(TypeError):
            spec.cls(*factors, None, 1)


# --------------------------------------------------------------------------------------------
# Bad geometry (convolutions)
# --------------------------------------------------------------------------------------------


@every_conv
@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"layout": "NCWH"}, "NCWH"),
        ({"layout": "CHWN"}, "CHWN"),
        ({"layout": "nchw"}, "nchw"),
        ({"layout": ""}, "layout"),
        ({"layout": None}, "layout"),
        ({"padding": -1}, "padding"),
        ({"padding": (0, -2)}, "padding"),
        ({"padding": (-1, 0)}, "padding"),
        ({"stride": 0}, "stride"),
        ({"stride": -1}, "stride"),
        ({"stride": (1, 0)}, "stride"),
        ({"stride": (-2, 1)}, "stride"),
        ({"stride": (1, 2, 3)}, "stride"),
        ({"dilation": 0}, "dilation"),
        ({"dilation": -2}, "dilation"),
        ({"dilation": (1, 0)}, "dilation"),
        ({"dilation": (-1, 1)}, "dilation"),
    ],
    ids=str,
)
def test_bad_geometry(kind, kwargs, text):
    with raises(ValueError, text):
        SPEC[kind].cls(**ones_args(kind), **kwargs)


@every_conv
@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 1.5},
        {"padding": True},
        {"dilation": "2"},
        {"stride": (1, 2.0)},
        {"padding": (1,)},
        {"dilation": ()},
    ],
    ids=str,
)
def test_geometry_not_an_int_or_a_pair(kind, kwargs):
    with raises((TypeError, ValueError), next(iter(kwargs))):
        SPEC[kind].cls(**ones_args(kind), **kwargs)


# --------------------------------------------------------------------------------------------
# activation= (the fused output clamp)
# --------------------------------------------------------------------------------------------

INF = float("inf")
GOOD_ACTIVATIONS = [
    # (activation=, layer.activation, (output_min, output_max))
    (None, None, (-INF, INF)),
    ("relu", "relu", (0.0, INF)),
    ("relu6", "relu6", (0.0, 6.0)),
    ((0, None), "relu", (0.0, INF)),
    ([0.0, 6], "relu6", (0.0, 6.0)),
    ((None, None), None, (-INF, INF)),
    ((-INF, INF), None, (-INF, INF)),
    ((-1, 1), (-1.0, 1.0), (-1.0, 1.0)),
    ((None, 0.5), (-INF, 0.5), (-INF, 0.5)),
    ((np.float64(-0.25), np.float32(2)), (-0.25, 2.0), (-0.25, 2.0)),
    ((0.1, 0.1), (float(F32(0.1)),) * 2, (float(F32(0.1)),) * 2),  # float32 values
    ((-1e300, 1e300), None, (-INF, INF)),  # beyond float32: open
]


@every_kind
@pytest.mark.parametrize("given, shown, bounds", GOOD_ACTIVATIONS, ids=str)
def test_activation_attributes(kind, given, shown, bounds):
    layer = layer_for(kind, activation=given)
    assert (layer.output_min, layer.output_max) == bounds
    assert type(layer.output_min) is float and type(layer.output_max) is float
    assert layer.activation == shown
    assert type(layer.activation) is type(shown)
    text = repr(layer)
    if shown is None:
        assert "activation" not in text, text
    else:
        assert "activation=" + (f'"{shown}"' if isinstance(shown, str) else repr(shown)) in text
    with pytest.raises(AttributeError):
        layer.activation = "relu"
    with pytest.raises(AttributeError):
        layer.output_min = 0.0
    y = layer(good_input(kind))  # all-ones factors: every output is expected_ones_output
    expected = min(max(expected_ones_output(kind), bounds[0]), bounds[1])
    np.testing.assert_array_equal(y, np.full_like(y, expected))


@every_kind
@pytest.mark.parametrize(
    "activation, exc, texts",
    [
        ("gelu", ValueError, ["gelu", "relu"]),
        ("RELU", ValueError, ["RELU"]),
        ("", ValueError, ["activation"]),
        ((float("nan"), 1.0), ValueError, ["nan", "activation"]),
        ((0.0, float("nan")), ValueError, ["nan"]),
        ((2.0, 1.0), ValueError, ["(2.0, 1.0)", "output_min"]),
        ((INF, -INF), ValueError, ["output_min"]),
        ((1.0, 2.0, 3.0), ValueError, ["(1.0, 2.0, 3.0)"]),
        ((1.0,), ValueError, ["(1.0,)"]),
        (3, TypeError, ["activation", "3"]),
        (np.array([0.0, 1.0]), TypeError, ["activation"]),
        ({"min": 0}, TypeError, ["activation"]),
        ((True, 2.0), TypeError, ["True"]),
        (("0", "1"), TypeError, ["'0'"]),
        ((0.0, 1j), TypeError, ["1j"]),
        ((object(), 1.0), TypeError, ["activation"]),
    ],
    ids=str,
)
def test_activation_bad_values(kind, activation, exc, texts):
    with raises(exc, *texts):
        layer_for(kind, activation=activation)


@every_kind
def test_activation_is_keyword_only_and_in_the_docstring(kind):
    cls = SPEC[kind].cls
    args = list(ones_args(kind).values())
    with pytest.raises(TypeError):
        cls(*args, "relu")
    with raises(TypeError, "activation"):
        cls(*args, activation="relu", **{"activation ": None})
    assert "activation :" in cls.__doc__ and '"relu6"' in cls.__doc__


@every_kind
def test_activation_reference_and_error_messages_agree(kind):
    """lrkernels.reference.output_bounds parses activation= as the layers do, refusing the same
    values with the same exception types."""
    from lrkernels.reference import output_bounds

    for given, _, bounds in GOOD_ACTIVATIONS:
        assert output_bounds(given) == bounds, given
    for bad in ["gelu", (float("nan"), 1), (2, 1), 3, (1, 2, 3), (True, 1), ("0", 1)]:
        with pytest.raises(Exception) as from_layer:
            layer_for(kind, activation=bad)
        with pytest.raises(Exception) as from_reference:
            output_bounds(bad)
        assert from_layer.type is from_reference.type, bad
