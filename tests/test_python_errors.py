"""Bad arguments to the Python layer (decompositions, from_dense, report) raise ValueError or
TypeError naming the argument, not an IndexError or ZeroDivisionError from deep inside (issue
11)."""

from __future__ import annotations

import numpy as np
import pytest

import lrkernels
from lrkernels import decompose, report


def test_linear_calibration_scalar(rng):
    W = rng.standard_normal((6, 5))
    with pytest.raises(ValueError, match="calibration must be an array"):
        lrkernels.LowRankLinear.from_dense(W, rank=2, calibration=1.0)
    with pytest.raises(ValueError, match="calibration"):
        decompose.svd(W, 2, calibration=np.float64(3.0))


@pytest.mark.parametrize("cls", ["TuckerConv2d", "CPConv2d"])
@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("bad", [0, (1, 0), -1])
def test_conv_calibration_zero_stride_or_dilation(rng, cls, name, bad):
    T = rng.standard_normal((6, 5, 3, 3))
    X = rng.standard_normal((2, 5, 8, 8))
    with pytest.raises(ValueError, match=name):
        getattr(lrkernels, cls).from_dense(T, rank=2, calibration=X, **{name: bad})


def test_patch_second_moment_bad_geometry(rng):
    X = rng.standard_normal((2, 3, 6, 6))
    for kwargs, name in (
        ({"stride": 0}, "stride"),
        ({"dilation": 0}, "dilation"),
        ({"padding": -1}, "padding"),
    ):
        with pytest.raises(ValueError, match=name):
            decompose.patch_second_moment(X, 3, **kwargs)
    with pytest.raises(ValueError, match="kernel_size"):
        decompose.patch_second_moment(X, 0)


@pytest.mark.parametrize("reg", [-1, float("nan"), float("inf"), "1e-6", True])
def test_bad_reg_names_reg(rng, reg):
    W = rng.standard_normal((6, 5))
    X = rng.standard_normal((20, 5))
    with pytest.raises(ValueError, match="reg must be a finite number >= 0"):
        decompose.svd(W, 2, calibration=X, reg=reg)
    T = rng.standard_normal((6, 5, 3, 3))
    Xc = rng.standard_normal((2, 5, 6, 6))
    with pytest.raises(ValueError, match="reg must be a finite number >= 0"):
        decompose.tucker2(T, 2, calibration=Xc, reg=reg)


def test_reg_zero_is_accepted(rng):
    W = rng.standard_normal((6, 5))
    X = rng.standard_normal((20, 3)) @ rng.standard_normal((3, 5))  # rank-deficient inputs
    U, V = decompose.svd(W, 2, calibration=X, reg=0)
    assert np.all(np.isfinite(U)) and np.all(np.isfinite(V))
    with pytest.raises(ValueError, match="all zero"):
        decompose.svd(W, 2, calibration=np.zeros((20, 5)), reg=0)


def test_report_bad_input_hw(rng):
    T = rng.standard_normal((6, 5, 3, 3))
    layer = lrkernels.TuckerConv2d.from_dense(T, rank=2, padding=1)
    for bad in ((0, 0), (-4, 4), (4, -1)):
        with pytest.raises(ValueError, match="input_hw"):
            report.layer_report(layer, T, input_hw=bad)
    with pytest.raises(TypeError, match="input_hw"):
        report.layer_report(layer, T, input_hw=(2.5, 4))
    assert report.layer_report(layer, T, input_hw=(4, 4))["flops_basis"] == "per 4x4 image"


def test_report_unsupported_layer_names_the_type():
    with pytest.raises(TypeError, match="layer_report: unsupported layer type dict"):
        report.layer_report({}, np.ones((2, 2)))
    with pytest.raises(TypeError, match="reconstruct: unsupported layer type"):
        report.reconstruct(3)


def test_report_conv_calibration_must_be_images(rng):
    T = rng.standard_normal((6, 5, 3, 3))
    layer = lrkernels.TuckerConv2d.from_dense(T, rank=2, layout="NHWC")
    with pytest.raises(ValueError, match="calibration must be images \\(NHWC\\)"):
        report.layer_report(layer, T, rng.standard_normal((4, 5)))
