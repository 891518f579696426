"""Property-based tests (hypothesis): every layer against the numpy reference; argument checks.

Each legal example draws the layer (LowRankLinear, Linear, Conv2d, TuckerConv2d, CPConv2d), its
shapes (batch 0, 1-wide features and channels, rank 1, 1x1 kernels, 1x1 and even 0-sized
spatial inputs where padding makes the output >= 1x1), geometry (stride, padding, dilation given as
an int, a tuple, a list or numpy ints), layout, the dtypes (float16/32/64, longdouble, big-endian)
and memory orders (C, Fortran, transposed and permuted views, negative strides, non-unit strides,
offset slices, stride-0 broadcasts, unaligned data) of the input and of every weight, the ISA
(any of `available_isas()`, set for the call and restored) and the thread count (1..3, restored),
then compares the result with the float64 reference under the float32 error bounds of
lrk_testing.py. Views are cut out of NaN-filled buffers, so a read outside a view shows up as NaN.
Each illegal example builds or calls a layer with one thing wrong and requires a ValueError or
TypeError: never another exception, a crash or a result.

Profiles (registered in conftest.py, chosen by the environment variable HYPOTHESIS_PROFILE):

    python -m pytest tests/test_properties.py tests/test_properties_illegal.py
        "ci", the default: 50 examples per test, derandomized (the same examples on every run,
        so CI is reproducible), no example database; a few seconds.
    HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_properties*.py
        2000 random examples per test (a few minutes); failures are saved in .hypothesis/ and
        replayed first on the next run. Add --hypothesis-seed=N for another search.
    ... --hypothesis-show-statistics
        examples run, and their time, per test.

Examples run in the ci profile: CI_EXAMPLES_PER_TEST x N_PROPERTY_TESTS (the `@given` tests
here and in test_properties_illegal.py; `test_example_count_is_documented` keeps the two
numbers honest) = 500, plus the 3 explicit `@example` cases, which run on every profile.
The illegal-argument tests are in test_properties_illegal.py; the strategies in
property_strategies.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import lrkernels  # noqa: E402
from layer_table import CONV_KINDS, LINEAR_KINDS  # noqa: E402
from lrk_testing import (  # noqa: E402
    assert_within_bound,
    check_output_array,
    conv_output_hw,
    image_shape,
)
from property_strategies import (  # noqa: E402
    INPUT_DTYPES,
    active,
    conv_geometry,
    dims,
    draw_array,
    draw_int_or_pair,
    isas,
    make_layer,
    ranks,
    seeds,
    threads,
    values,
)

CI_EXAMPLES_PER_TEST = 50  # keep equal to max_examples of the "ci" profile in conftest.py
N_PROPERTY_TESTS = 10  # the @given tests here and in test_properties_illegal.py


# --------------------------------------------------------------------------------------------
# Legal arguments: the layers match the reference
# --------------------------------------------------------------------------------------------


@given(data=st.data())
def test_linear_layers_match_reference(data):
    kind = data.draw(st.sampled_from(LINEAR_KINDS), label="kind")
    in_f = data.draw(dims, label="in_features")
    out_f = data.draw(dims, label="out_features")
    rank = data.draw(ranks, label="rank")
    bias = data.draw(st.booleans(), label="bias")
    # None: a 1-D x; large batches cross the row tiles and the threads' work threshold.
    batch = data.draw(st.one_of(st.none(), st.integers(0, 20), st.integers(60, 300)), label="batch")
    isa = data.draw(isas, label="isa")
    n_threads = data.draw(threads, label="threads")
    pack_first = data.draw(st.booleans(), label="construct under the default ISA")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))

    def build():
        return make_layer(kind, data, rng, in_f, out_f, (rank,), (1, 1), bias)

    layer, ref, bound = build() if pack_first else (None, None, None)
    with active(isa, n_threads):
        if layer is None:
            layer, ref, bound = build()
        x_shape = (in_f,) if batch is None else (batch, in_f)
        scale = data.draw(st.sampled_from([1.0, 1e-3, 1e3]), label="x scale")
        kind_x = data.draw(st.sampled_from(["normal", "integers"]), label="x values")
        x = draw_array(data, rng, x_shape, "x", INPUT_DTYPES, scale, kind_x)
        y = layer(x)
        assert lrkernels.last_used_isa() == isa
    case = f"{kind} in={in_f} out={out_f} rank={rank} x {x.dtype}{x.shape} strides {x.strides}"
    check_output_array(y, x_shape[:-1] + (out_f,), case)
    assert not np.shares_memory(y, x), case
    assert_within_bound(y, ref(x), bound(x), case)


@pytest.mark.parametrize("kind", CONV_KINDS)
@given(data=st.data())
def test_conv_layers_match_reference(kind, data):
    cin = data.draw(st.one_of(st.integers(1, 12), st.sampled_from([16, 17, 33])), label="Cin")
    cout = data.draw(st.one_of(st.integers(1, 12), st.sampled_from([16, 17, 33])), label="Cout")
    r1 = data.draw(ranks, label="rank (in)")
    r2 = data.draw(ranks, label="rank (out)")
    kernel, stride, padding, dilation, hw = conv_geometry(data)
    layout = data.draw(st.sampled_from(["NCHW", "NHWC"]), label="layout")
    geometry = {
        "stride": draw_int_or_pair(data, *stride, "stride"),
        "padding": draw_int_or_pair(data, *padding, "padding"),
        "dilation": draw_int_or_pair(data, *dilation, "dilation"),
        "layout": layout,
    }
    batch = data.draw(st.integers(0, 3), label="batch")
    bias = data.draw(st.booleans(), label="bias")
    isa = data.draw(isas, label="isa")
    n_threads = data.draw(threads, label="threads")
    pack_first = data.draw(st.booleans(), label="construct under the default ISA")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))

    def build():
        return make_layer(kind, data, rng, cin, cout, (r1, r2), kernel, bias, geometry)

    layer, ref, bound = build() if pack_first else (None, None, None)
    with active(isa, n_threads):
        if layer is None:
            layer, ref, bound = build()
        scale = data.draw(st.sampled_from([1.0, 1e-3, 1e3]), label="x scale")
        x = draw_array(data, rng, image_shape(batch, cin, hw, layout), "x", INPUT_DTYPES, scale)
        y = layer(x)
        assert lrkernels.last_used_isa() == isa
    ho, wo = conv_output_hw(hw, kernel, stride, padding, dilation)
    case = (
        f"{kind} Cin={cin} Cout={cout} ranks=({r1}, {r2}) kernel={kernel} {geometry} "
        f"x {x.dtype}{x.shape} strides {x.strides}"
    )
    check_output_array(y, image_shape(batch, cout, (ho, wo), layout), case)
    assert not np.shares_memory(y, x), case
    assert_within_bound(y, ref(x), bound(x), case)


@given(data=st.data())
def test_thread_count_does_not_change_results(data):
    """README: work is split over output tiles only, so every thread count gives the same bits.
    The shapes are large enough for the pool to split the call."""
    kind = data.draw(st.sampled_from(LINEAR_KINDS + CONV_KINDS), label="kind")
    isa = data.draw(isas, label="isa")
    counts = data.draw(st.lists(st.integers(2, 5), min_size=1, max_size=2), label="threads")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    if kind in LINEAR_KINDS:
        in_f = data.draw(st.integers(100, 300), label="in")
        out_f = data.draw(st.integers(100, 300), label="out")
        batch = data.draw(st.integers(1, 40), label="batch")
        layer, _, _ = make_layer(kind, data, rng, in_f, out_f, (data.draw(ranks),), (1, 1), True)
        x = values(rng, (batch, in_f), np.float32)
    else:
        layout = data.draw(st.sampled_from(["NCHW", "NHWC"]), label="layout")
        cin, cout = (data.draw(st.integers(8, 40), label=n) for n in ("Cin", "Cout"))
        k = data.draw(st.sampled_from([1, 3, 5]), label="k")
        h, w = (data.draw(st.integers(10, 30), label=n) for n in "HW")
        geometry = {
            "stride": data.draw(st.integers(1, 2), label="stride"),
            "padding": k // 2,
            "dilation": 1,
            "layout": layout,
        }
        r = data.draw(st.integers(4, 24), label="rank")
        layer, _, _ = make_layer(kind, data, rng, cin, cout, (r, r), (k, k), True, geometry)
        x = values(rng, image_shape(data.draw(st.integers(1, 3)), cin, (h, w), layout), np.float32)
    with active(isa, 1):
        y1 = layer(x)
    for n in counts:
        with active(isa, n):
            yn = layer(x)
            assert lrkernels.last_used_isa() == isa
        assert np.array_equal(y1, yn, equal_nan=True), (
            f"{kind} {isa}: {n} threads differ from 1 (max |diff| {np.nanmax(np.abs(y1 - yn))})"
        )


def test_example_count_is_documented():
    """N_PROPERTY_TESTS counts the @given tests (the parametrized one once per kind)."""
    import test_properties_illegal

    given_tests = [
        f
        for module in (globals(), vars(test_properties_illegal))
        for name, f in module.items()
        if name.startswith("test_") and getattr(f, "is_hypothesis_test", False)
    ]
    n = sum(len(CONV_KINDS) if f is test_conv_layers_match_reference else 1 for f in given_tests)
    assert n == N_PROPERTY_TESTS
    profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    if profile == "ci":
        assert hypothesis.settings().max_examples == CI_EXAMPLES_PER_TEST
