"""Layers from trained dense weights, and the ``from_dense`` classmethods built from them.

One keyword set for every kind: ``from_dense(weight, bias=None, *, rank= | energy= | ratio= |
vbmf=True, calibration=None, ...)`` with the layer's geometry (convolutions) and the options of
its decomposition after that. TuckerConv2d's rank is the pair (r_in, r_out) (an int: both) and
also accepted as ``ranks=``.

`install_from_dense(specs)` (called once by `lrkernels.layer_specs` at import) makes each
``spec.decomposer`` the classmethod ``spec.cls.from_dense``: ``cls`` is honoured, so a user
subclass of LowRankLinear gets an instance of the subclass (built as ``cls(*factors, bias,
**geometry)``, the base class's constructor signature). The layer records how its rank was found
as ``layer.rank_choice`` (a RankChoice: rank, reason, details). Linear and Conv2d have no
from_dense:
their "decomposition" would be the weight itself, which their constructors already take.
"""

from __future__ import annotations

import functools
import inspect

from .. import _core
from .criteria import cp_factors, linear_factors, tucker2_factors

__all__ = ["cp_conv2d_from_dense", "lowrank_linear_from_dense", "tucker_conv2d_from_dense"]


def _with_choice(layer, choice):
    """The layer, with how its rank was found (a RankChoice) as ``layer.rank_choice``."""
    layer.rank_choice = choice
    return layer


def _build(
    layer_class,
    default_class,
    factors_and_choice,
    bias,
    activation=None,
    precision="fp32",
    **geometry,
):
    """(layer_class or default_class)(*factors, bias, **geometry, activation=activation,
    precision=precision) from a ``*_factors`` result (factors..., RankChoice), with its rank
    choice as ``layer.rank_choice``. The activation and precision are passed only when not the
    default, so a user subclass without them still works."""
    *factors, choice = factors_and_choice
    extra = {} if activation is None else {"activation": activation}
    if precision != "fp32":
        extra["precision"] = precision
    layer = (layer_class or default_class)(*factors, bias, **geometry, **extra)
    return _with_choice(layer, choice)


def lowrank_linear_from_dense(
    weight,
    bias=None,
    *,
    rank=None,
    energy=None,
    ratio=None,
    vbmf=False,
    calibration=None,
    reg="auto",
    activation=None,
    precision="fp32",
    layer_class=None,
):
    """LowRankLinear(U, V, bias) from a dense weight W (out, in), by exactly one criterion.

    rank=r (1 <= r <= min(out, in)); energy=e in (0, 1] (smallest rank keeping e of ||W||_F^2);
    ratio=q > 0 (largest rank with r (out + in) <= q out in); vbmf=True (empirical VBMF).
    calibration=X (n, in): minimize the output error on X instead of the weight error (energy and
    vbmf then apply to the output spectrum; energy's rank is never below half the weight-only
    rank at the same energy). reg="auto" (default): the ridge of the data-aware fit chosen by
    5-fold cross-validated output error over the calibration rows, then refit on all of them (a
    number >= 0: that ridge relative to the mean eigenvalue of E[x x^T]; 0: none); the held-out
    and in-sample errors are in ``layer.rank_choice.details``. None or several criteria:
    ValueError. The rank and its reason: `linear_factors`; errors and costs:
    `lrkernels.report.layer_report`.
    activation: the built layer's fused output clamp (None, "relu", "relu6" or (min, max)); the
    factors approximate the weight alone, as without it. precision: the built layer's ("fp32",
    "fp16" or "int8"; the factors are fitted in float64 and quantized by the layer).

    layer_class: the class to build (a subclass of LowRankLinear; default LowRankLinear).
    """
    result = linear_factors(
        weight,
        rank=rank,
        energy=energy,
        ratio=ratio,
        vbmf=vbmf,
        calibration=calibration,
        reg=reg,
    )
    return _build(layer_class, _core.LowRankLinear, result, bias, activation, precision)


def tucker_conv2d_from_dense(
    weight,
    bias=None,
    *,
    rank=None,
    energy=None,
    ratio=None,
    vbmf=False,
    calibration=None,
    reg="auto",
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    method="hooi",
    ranks=None,
    activation=None,
    precision="fp32",
    layer_class=None,
):
    """TuckerConv2d from a dense conv weight (Cout, Cin, kh, kw), by exactly one criterion.

    rank=(r_in, r_out) (first maps Cin -> r_in, last maps r_out -> Cout; an int means both;
    ranks= is the same keyword, both together: ValueError); energy=e (cheapest ranks whose HOSVD
    bound keeps e of ||weight||^2); ratio=q (largest ranks, r_in/r_out ~ Cin/Cout, with <= q x
    the dense parameters); vbmf=True (EVBMF on the two unfoldings). calibration=X: images in
    `layout` for the data-aware fit; reg="auto" | number >= 0: its ridge (as LowRankLinear's,
    held out by whole images). stride, padding, dilation, layout: the layer's. method:
    "hooi" (default) or "hosvd". See `tucker2_factors`. activation: the built layer's fused output
    clamp (None, "relu", "relu6" or (min, max)). precision: the built layer's ("fp32", "fp16" or
    "int8").

    layer_class: the class to build (a subclass of TuckerConv2d; default TuckerConv2d).
    """
    geometry = dict(stride=stride, padding=padding, dilation=dilation, layout=layout)
    result = tucker2_factors(
        weight,
        rank=rank,
        ranks=ranks,
        energy=energy,
        ratio=ratio,
        vbmf=vbmf,
        calibration=calibration,
        reg=reg,
        method=method,
        **geometry,
    )
    return _build(layer_class, _core.TuckerConv2d, result, bias, activation, precision, **geometry)


def cp_conv2d_from_dense(
    weight,
    bias=None,
    *,
    rank=None,
    energy=None,
    ratio=None,
    vbmf=False,
    calibration=None,
    reg="auto",
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    n_iter_max=500,
    tol=1e-6,
    seed=0,
    max_seconds=20.0,
    progress=None,
    activation=None,
    layer_class=None,
):
    """CPConv2d from a dense conv weight (Cout, Cin, kh, kw), by exactly one criterion.

    rank=R; ratio=q (largest R with R (Cin + kh + kw + Cout) <= q x the dense parameters);
    energy=e (smallest R whose CP-ALS fit keeps e of ||weight||^2: a bisection between SVD
    bounds, within max_seconds (default 20; None: no limit), progress=True printing it on
    stderr). vbmf=True is refused (ValueError): no analytic VBMF exists for a CP rank.
    calibration=X: images in `layout` for the data-aware fit; reg="auto" | number >= 0: its
    ridge (as TuckerConv2d's). n_iter_max, tol, seed: CP-ALS (see
    `cp`). The rank and how it was found (a RankChoice): `cp_factors`, which takes the same
    arguments (but activation). activation: the built layer's fused output clamp (None, "relu",
    "relu6" or (min, max)).

    layer_class: the class to build (a subclass of CPConv2d; default CPConv2d).
    """
    geometry = dict(stride=stride, padding=padding, dilation=dilation, layout=layout)
    result = cp_factors(
        weight,
        rank=rank,
        energy=energy,
        ratio=ratio,
        vbmf=vbmf,
        calibration=calibration,
        reg=reg,
        n_iter_max=n_iter_max,
        tol=tol,
        seed=seed,
        max_seconds=max_seconds,
        progress=progress,
        **geometry,
    )
    return _build(layer_class, _core.CPConv2d, result, bias, activation, **geometry)


# --------------------------------------------------------------------------------------------
# the classmethods
# --------------------------------------------------------------------------------------------


def as_classmethod(func, cls_name):
    """``func`` (a decomposer taking layer_class=) as the classmethod ``cls_name.from_dense``,
    building ``cls``: its signature is func's with ``cls`` first and without layer_class."""

    @functools.wraps(func)
    def from_dense(cls, *args, **kwargs):
        if "layer_class" in kwargs:  # the class is the one from_dense is called on
            raise TypeError(f"{cls.__name__}.from_dense() got an unexpected keyword 'layer_class'")
        return func(*args, layer_class=cls, **kwargs)

    sig = inspect.signature(func)
    cls_param = inspect.Parameter("cls", inspect.Parameter.POSITIONAL_ONLY)
    params = [p for p in sig.parameters.values() if p.name != "layer_class"]
    from_dense.__signature__ = sig.replace(parameters=[cls_param, *params])
    # The classmethod builds the class it is called on: its doc drops the layer_class paragraph.
    doc = (func.__doc__ or "").split("\n\n")
    from_dense.__doc__ = "\n\n".join(p for p in doc if not p.strip().startswith("layer_class"))
    from_dense.__qualname__ = f"{cls_name}.from_dense"
    from_dense.__name__ = "from_dense"
    return classmethod(from_dense)


def install_from_dense(specs):
    """Set ``spec.cls.from_dense`` for every spec with a decomposer (lrkernels.layer_specs)."""
    for spec in specs:
        if spec.decomposer is not None:
            spec.cls.from_dense = as_classmethod(spec.decomposer, spec.name)
