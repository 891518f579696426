"""lrkernels.layer_specs: the one table of layer kinds agrees with the layers, the reference
functions and hand counts of parameters and FLOPs; spec_for resolves instances, classes, names
and user subclasses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import lrkernels
from lrkernels import reference
from lrkernels.layer_specs import SPECS, LayerSpec, spec_for

NAMES = ("LowRankLinear", "Linear", "TuckerConv2d", "CPConv2d", "Conv2d")
GEOM = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2)}


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _layers(rng, layout="NCHW"):
    """One small layer of each kind (with bias), and an input for it."""
    cin, cout, kh, kw = 5, 6, 3, 2
    g = dict(GEOM, layout=layout)
    b = _f32(rng, cout)
    xl = _f32(rng, 4, 7)
    xc = _f32(rng, 2, cin, 9, 8) if layout == "NCHW" else _f32(rng, 2, 9, 8, cin)
    return {
        "LowRankLinear": (lrkernels.LowRankLinear(_f32(rng, 6, 3), _f32(rng, 3, 7), b), xl),
        "Linear": (lrkernels.Linear(_f32(rng, 6, 7), b), xl),
        "TuckerConv2d": (
            lrkernels.TuckerConv2d(
                _f32(rng, 3, cin), _f32(rng, 4, 3, kh, kw), _f32(rng, cout, 4), b, **g
            ),
            xc,
        ),
        "CPConv2d": (
            lrkernels.CPConv2d(
                _f32(rng, 3, cin), _f32(rng, 3, kh), _f32(rng, 3, kw), _f32(rng, cout, 3), b, **g
            ),
            xc,
        ),
        "Conv2d": (lrkernels.Conv2d(_f32(rng, cout, cin, kh, kw), b, **g), xc),
    }


def test_table_has_the_five_kinds_by_class_name():
    assert tuple(s.name for s in SPECS) == NAMES
    for s in SPECS:
        assert s.cls is getattr(lrkernels, s.name)
        assert s.conv == s.name.endswith("Conv2d")
        assert s.factorized == (s.name not in ("Linear", "Conv2d"))
        assert (s.decomposer is None) == (not s.factorized)
        assert len(s.factor_dims) == len(s.factor_names)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPECS[0].name = "x"


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_to_dense_run_reference_and_layer_agree(rng, layout):
    for name, (layer, x) in _layers(rng, layout).items():
        s = spec_for(layer)
        assert s.name == name
        y = s.run_reference(layer, x)
        np.testing.assert_allclose(layer(x), y, rtol=1e-4, atol=1e-4)
        W = s.to_dense(layer)
        assert W.dtype == np.float64
        geo = s.geometry(layer)
        if s.conv:
            assert geo == dict(GEOM, layout=layout)
            dense = reference.conv2d(x, W, layer.bias, **geo)
        else:
            assert geo == {}
            dense = reference.linear(x, W, layer.bias)
        np.testing.assert_allclose(dense, y, rtol=1e-9, atol=1e-9)
        # The dense equivalent keeps geometry, layout and (by default) the bias.
        d = s.dense_equivalent(layer)
        assert type(d) is (lrkernels.Conv2d if s.conv else lrkernels.Linear)
        np.testing.assert_allclose(d(x), y, rtol=1e-4, atol=1e-4)
        nb = s.dense_equivalent(layer, 2 * W, bias=None)
        assert nb.bias is None
        np.testing.assert_allclose(nb(x), 2 * (y - _bias_term(layer, layout)), rtol=1e-4, atol=1e-4)
        for f, shape in zip(
            s.factors(layer), s.factor_shapes(*s.in_out(layer), s.ranks(layer), s.kernel(layer))
        ):
            assert np.shape(f) == shape


def _bias_term(layer, layout):
    b = np.asarray(layer.bias, dtype=np.float64)
    if not spec_for(layer).conv or layout == "NHWC":
        return b
    return b[None, :, None, None]


def test_ranks_params_and_flops_against_hand_counts(rng):
    L = _layers(rng)
    # LowRankLinear U (6, 3), V (3, 7); bias 6
    s, lay = spec_for("LowRankLinear"), L["LowRankLinear"][0]
    assert s.ranks(lay) == (3,)
    assert s.num_params(lay) == 6 * 3 + 3 * 7 + 6
    assert s.flops(lay) == (2 * 3 * (6 + 7), 2 * 6 * 7, "per sample")
    s, lay = spec_for("Linear"), L["Linear"][0]
    assert s.ranks(lay) == ()
    assert s.num_params(lay) == 6 * 7 + 6
    assert s.flops(lay) == (2 * 42, 2 * 42, "per sample")
    # Conv: cin 5, cout 6, kernel 3x2, stride (2, 1), padding (1, 2), dilation (1, 2).
    # On 9x8: Ho = (9 + 2 - 3) // 2 + 1 = 5, Wo = (8 + 4 - 3) // 1 + 1 = 10.
    ho, wo = 5, 10
    dense_pos = 2 * 6 * 5 * 3 * 2
    s, lay = spec_for("Conv2d"), L["Conv2d"][0]
    assert s.num_params(lay) == 6 * 5 * 3 * 2 + 6
    assert s.flops(lay) == (dense_pos, dense_pos, "per output position")
    assert s.flops(lay, (9, 8)) == (dense_pos * ho * wo, dense_pos * ho * wo, "per 9x8 image")
    s, lay = spec_for("TuckerConv2d"), L["TuckerConv2d"][0]
    assert s.ranks(lay) == (3, 4)
    assert s.num_params(lay) == 3 * 5 + 4 * 3 * 6 + 6 * 4 + 6
    assert s.num_factor_params(lay) == 3 * 5 + 4 * 3 * 6 + 6 * 4
    macs = 9 * 8 * 3 * 5 + ho * wo * 4 * 3 * 6 + ho * wo * 6 * 4
    assert s.flops(lay, (9, 8)) == (2 * macs, dense_pos * ho * wo, "per 9x8 image")
    assert s.flops(lay)[0] == 2 * (3 * 5 + 4 * 3 * 6 + 6 * 4)
    s, lay = spec_for("CPConv2d"), L["CPConv2d"][0]
    assert s.ranks(lay) == (3,)
    assert s.num_params(lay) == 3 * 5 + 3 * 3 + 3 * 2 + 6 * 3 + 6
    macs = 9 * 8 * 3 * 5 + ho * 8 * 3 * 3 + ho * wo * 3 * 2 + ho * wo * 6 * 3
    assert s.flops(lay, (9, 8)) == (2 * macs, dense_pos * ho * wo, "per 9x8 image")


def test_factor_shapes():
    assert spec_for("LowRankLinear").factor_shapes(7, 6, (3,)) == ((6, 3), (3, 7))
    assert spec_for("Linear").factor_shapes(7, 6) == ((6, 7),)
    assert spec_for("Conv2d").factor_shapes(5, 6, (), 3) == ((6, 5, 3, 3),)
    assert spec_for("TuckerConv2d").factor_shapes(5, 6, (2, 4), (3, 1)) == (
        (2, 5),
        (4, 2, 3, 1),
        (6, 4),
    )
    assert spec_for("CPConv2d").factor_shapes(5, 6, 3, (3, 2)) == ((3, 5), (3, 3), (3, 2), (6, 3))
    with pytest.raises(ValueError, match="ranks"):
        spec_for("TuckerConv2d").factor_shapes(5, 6, (2,))


def test_flops_rejects_bad_input_hw(rng):
    layer = _layers(rng)["Conv2d"][0]
    s = spec_for(layer)
    for bad in ((0, 0), (-1, 5), (3, 0)):
        with pytest.raises(ValueError, match="input_hw"):
            s.flops(layer, bad)
    for bad in ((3,), (1, 2, 3)):
        with pytest.raises(ValueError, match="input_hw"):
            s.flops(layer, bad)
    for bad in (3, (1.5, 2), (True, 2)):
        with pytest.raises(TypeError, match="input_hw"):
            s.flops(layer, bad)


def test_spec_for_instances_classes_names_and_subclasses(rng):
    L = _layers(rng)
    for name in NAMES:
        s = spec_for(name)
        assert isinstance(s, LayerSpec) and s.name == name
        assert spec_for(s.cls) is s
        assert spec_for(L[name][0]) is s
        assert spec_for(s) is s

    class MyLowRank(lrkernels.LowRankLinear):
        pass

    class Deeper(MyLowRank):
        pass

    class MyTucker(lrkernels.TuckerConv2d):
        pass

    assert spec_for(MyLowRank).name == "LowRankLinear"
    assert spec_for(Deeper).name == "LowRankLinear"
    assert spec_for(MyTucker).name == "TuckerConv2d"
    layer = Deeper(_f32(rng, 4, 2), _f32(rng, 2, 3))
    assert spec_for(layer).name == "LowRankLinear"
    assert spec_for(layer).num_params(layer) == 4 * 2 + 2 * 3

    for bad in (object(), 3, None, np.zeros(3), int):
        with pytest.raises(TypeError, match="unsupported layer type"):
            spec_for(bad)
    with pytest.raises(TypeError, match="unknown layer kind 'lowrank'"):
        spec_for("lowrank")


def test_decomposer_builds_the_kind(rng):
    W = rng.standard_normal((6, 7))
    T = rng.standard_normal((6, 5, 3, 3))
    for s in SPECS:
        if s.decomposer is None:
            continue
        layer = s.decomposer(T if s.conv else W, None, ratio=0.5)
        assert type(layer) is s.cls


def test_from_dense_honours_subclasses(rng):
    class MyLowRank(lrkernels.LowRankLinear):
        pass

    class MyTucker(lrkernels.TuckerConv2d):
        pass

    class MyCP(lrkernels.CPConv2d):
        pass

    W = rng.standard_normal((6, 7))
    T = rng.standard_normal((6, 5, 3, 3))
    assert type(MyLowRank.from_dense(W, rank=2)) is MyLowRank
    assert type(lrkernels.LowRankLinear.from_dense(W, rank=2)) is lrkernels.LowRankLinear
    t = MyTucker.from_dense(T, ranks=(2, 3), stride=2, padding=1, layout="NHWC")
    assert type(t) is MyTucker and t.stride == (2, 2) and t.layout == "NHWC"
    assert type(MyCP.from_dense(T, rank=2)) is MyCP


def _with_activation(layer, activation):
    """The same layer (factors, bias, geometry) with another activation."""
    s = spec_for(layer)
    return s.cls(*s.factors(layer), layer.bias, **s.geometry(layer), activation=activation)


@pytest.mark.parametrize("activation", ["relu", "relu6", (-0.5, 0.75)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_run_reference_and_dense_equivalent_keep_the_activation(rng, layout, activation):
    for layer, x in _layers(rng, layout).values():
        s = spec_for(layer)
        plain = s.run_reference(layer, x)
        layer = _with_activation(layer, activation)
        assert s.activation(layer) == layer.activation
        y = s.run_reference(layer, x)
        np.testing.assert_array_equal(y, reference.clamp_output(plain, activation))
        np.testing.assert_allclose(layer(x), y, rtol=1e-4, atol=1e-4)
        d = s.dense_equivalent(layer)
        assert d.activation == layer.activation
        np.testing.assert_allclose(d(x), y, rtol=1e-4, atol=1e-4)
        assert s.dense_equivalent(layer, activation=None).activation is None
        assert s.dense_equivalent(layer, activation="relu6").activation == "relu6"


def test_from_dense_passes_the_activation(rng):
    class MyTucker(lrkernels.TuckerConv2d):
        pass

    W = rng.standard_normal((6, 7))
    T = rng.standard_normal((6, 5, 3, 3))
    for s in SPECS:
        if s.decomposer is None:
            continue
        layer = s.cls.from_dense(T if s.conv else W, ratio=0.5, activation="relu6")
        assert type(layer) is s.cls and layer.activation == "relu6"
        assert s.cls.from_dense(T if s.conv else W, ratio=0.5).activation is None
    t = MyTucker.from_dense(T, ranks=(2, 3), stride=2, padding=1, layout="NHWC", activation=(-1, 1))
    assert type(t) is MyTucker and t.stride == (2, 2) and t.layout == "NHWC"
    assert t.activation == (-1.0, 1.0)
    x = rng.standard_normal((2, 6, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(t(x), spec_for(t).run_reference(t, x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="gelu"):
        lrkernels.LowRankLinear.from_dense(W, rank=2, activation="gelu")
