"""One table of the lrkernels layer kinds: what each layer is made of and how to compute with it.

Every piece of Python that must know a layer's kind (the report, the decompositions' ``from_dense``,
the benchmark, the tests) asks the table instead of switching on class names:

    spec = spec_for(layer)            # a layer, a layer class (user subclasses too) or a class name
    spec.name                         # "TuckerConv2d": the one name of a kind, everywhere
    spec.factors(layer)               # (first, core, last): constructor order, bias excluded
    spec.to_dense(layer)              # the float64 dense weight the factors multiply out to
    spec.run_reference(layer, x)      # the numpy reference output of the layer
    spec.num_params(layer), spec.flops(layer, input_hw)

The table only reads attributes the layers expose (U, V, W, weight, first, core, last, vertical,
horizontal, bias, rank, ranks, kernel_size, stride, padding, dilation, layout, activation, in/out
sizes).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import _core, reference
from .reference import output_size

__all__ = ["LayerSpec", "SPECS", "spec_for"]

_GEOMETRY = ("stride", "padding", "dilation", "layout")
_KEEP_BIAS = object()  # dense_equivalent's default: the layer's own bias


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _kernel_pair(kernel):
    """kernel as (kh, kw) of ints (an int means square)."""
    try:
        k = operator.index(kernel)
        return (k, k)
    except TypeError:
        kh, kw = kernel
        return (operator.index(kh), operator.index(kw))


def _input_hw(input_hw):
    """input_hw as (h, w) of positive ints, or None; ValueError/TypeError naming input_hw."""
    if input_hw is None:
        return None
    try:
        items = tuple(input_hw)
    except TypeError:
        raise TypeError(
            f"input_hw must be None or a pair (h, w) of ints, got {input_hw!r}"
        ) from None
    if len(items) != 2:
        raise ValueError(f"input_hw must be None or a pair (h, w) of ints, got {input_hw!r}")
    try:
        if any(isinstance(v, (bool, np.bool_)) for v in items):
            raise TypeError
        h, w = (operator.index(v) for v in items)
    except TypeError:
        raise TypeError(
            f"input_hw must be None or a pair (h, w) of ints, got {input_hw!r}"
        ) from None
    if h < 1 or w < 1:
        raise ValueError(f"input_hw must be positive in both axes, got {input_hw!r}")
    return h, w


# --------------------------------------------------------------------------------------------
# per-kind pieces: dense weight, rank, factor shapes and multiply-adds
# --------------------------------------------------------------------------------------------


def _dense_lowrank(f):
    U, V = f
    return _f64(U) @ _f64(V)


def _dense_single(f):
    return _f64(f[0])


def _dense_tucker(f):
    first, core, last = f
    return np.einsum("os,sryx,rc->ocyx", _f64(last), _f64(core), _f64(first))


def _dense_cp(f):
    first, vertical, horizontal, last = f
    return np.einsum("or,ry,rx,rc->ocyx", _f64(last), _f64(vertical), _f64(horizontal), _f64(first))


def _shapes_lowrank(i, o, r, k):
    return ((o, r[0]), (r[0], i))


def _shapes_linear(i, o, r, k):
    return ((o, i),)


def _shapes_conv(i, o, r, k):
    return ((o, i, *k),)


def _shapes_tucker(i, o, r, k):
    r_in, r_out = r
    return ((r_in, i), (r_out, r_in, *k), (o, r_out))


def _shapes_cp(i, o, r, k):
    return ((r[0], i), (r[0], k[0]), (r[0], k[1]), (o, r[0]))


def _macs_linear(layer, ranks, g):
    return layer.out_features * layer.in_features


def _macs_lowrank(layer, ranks, g):
    return ranks[0] * (layer.out_features + layer.in_features)


def _macs_conv(layer, ranks, g):
    return g["out_pos"] * layer.out_channels * layer.in_channels * g["kh"] * g["kw"]


def _macs_tucker(layer, ranks, g):
    r_in, r_out = ranks
    return (
        g["in_pos"] * r_in * layer.in_channels
        + g["out_pos"] * r_out * r_in * g["kh"] * g["kw"]
        + g["out_pos"] * layer.out_channels * r_out
    )


def _macs_cp(layer, ranks, g):
    (r,) = ranks
    return (
        g["in_pos"] * r * layer.in_channels
        + g["mid_pos"] * r * g["kh"]  # the kh x 1 stage: Ho rows x all W columns
        + g["out_pos"] * r * g["kw"]
        + g["out_pos"] * layer.out_channels * r
    )


# --------------------------------------------------------------------------------------------
# the spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """Everything the Python layer needs to know about one layer kind (see the module docstring).

    name            the class name, the one name of the kind (report rows, bench rows, errors)
    cls             the layer class (the pybind class in lrkernels._core)
    conv            True for the convolutions (geometry: stride, padding, dilation, layout)
    factorized      False for the dense baselines Linear and Conv2d
    factor_names    the factor attributes in constructor order, bias excluded
    factor_dims     their shapes in words, same order
    reference       the lrkernels.reference function:
                    reference(x, *factors, bias, **geometry, activation=None)
    decomposer      (weight, bias=None, **criterion) -> layer, the ``from_dense`` function of the
                    kind (it also takes ``layer_class=`` to build a subclass); None for dense kinds
    """

    name: str
    cls: type
    conv: bool
    factorized: bool
    factor_names: tuple
    factor_dims: tuple
    reference: Callable
    decomposer: Callable | None
    # The per-kind computations behind the methods (not part of the interface):
    # (factors) -> float64 dense weight
    _dense: Callable = field(default=None, repr=False)
    # (in_dim, out_dim, ranks, (kh, kw)) -> factor shapes
    _shapes: Callable = field(default=None, repr=False)
    # (layer, ranks, position counts) -> multiply-adds
    _macs: Callable = field(default=None, repr=False)
    # how many ranks the kind has: 0 dense, 1 LowRankLinear/CP, 2 Tucker
    _num_ranks: int = field(default=0, repr=False)

    def __repr__(self):
        return f"LayerSpec({self.name})"

    # -- reading a layer ---------------------------------------------------------------------

    def factors(self, layer) -> tuple:
        """The layer's factor arrays, in constructor order (bias excluded)."""
        return tuple(getattr(layer, n) for n in self.factor_names)

    def ranks(self, layer) -> tuple:
        """() for dense kinds, (rank,) for LowRankLinear and CPConv2d, (R_in, R_out) for Tucker."""
        if self._num_ranks == 0:
            return ()
        if self._num_ranks == 1:
            return (int(layer.rank),)
        return tuple(int(r) for r in layer.ranks)

    def geometry(self, layer) -> dict:
        """{} for linear kinds; stride, padding, dilation (pairs) and layout for convolutions."""
        if not self.conv:
            return {}
        return {n: getattr(layer, n) for n in _GEOMETRY}

    def in_out(self, layer) -> tuple:
        """(in_features, out_features) or (in_channels, out_channels)."""
        if self.conv:
            return int(layer.in_channels), int(layer.out_channels)
        return int(layer.in_features), int(layer.out_features)

    def kernel(self, layer) -> tuple:
        """(kh, kw); (1, 1) for linear kinds."""
        return tuple(int(k) for k in layer.kernel_size) if self.conv else (1, 1)

    # -- shapes and sizes --------------------------------------------------------------------

    def factor_shapes(self, in_dim, out_dim, ranks=(), kernel=(1, 1)) -> tuple:
        """The shapes of the factors for these sizes, in constructor order.

        ranks: () for dense kinds, (r,) for LowRankLinear and CPConv2d, (r_in, r_out) for
        TuckerConv2d (an int is accepted for one rank). kernel: (kh, kw) or an int (convolutions).
        """
        if isinstance(ranks, (int, np.integer)) and not isinstance(ranks, (bool, np.bool_)):
            ranks = (ranks,)
        ranks = tuple(operator.index(r) for r in ranks)
        if len(ranks) != self._num_ranks:
            want = {0: "()", 1: "(rank,)", 2: "(r_in, r_out)"}[self._num_ranks]
            raise ValueError(f"{self.name}.factor_shapes: ranks must be {want}, got {ranks!r}")
        return self._shapes(
            operator.index(in_dim), operator.index(out_dim), ranks, _kernel_pair(kernel)
        )

    def num_factor_params(self, layer) -> int:
        """The number of weights in the factors (bias excluded)."""
        return int(sum(np.asarray(f).size for f in self.factors(layer)))

    def num_params(self, layer) -> int:
        """The number of parameters: the factors and the bias."""
        bias = 0 if layer.bias is None else int(np.asarray(layer.bias).size)
        return self.num_factor_params(layer) + bias

    def flops(self, layer, input_hw=None) -> tuple:
        """(flops, dense_flops, basis), flops = 2 x multiply-adds of the layer (bias excluded).

        Linear kinds: per sample. Convolutions: per image of size input_hw = (h, w), else per
        output position (the input 1x1 stage then counted once per output position: exact for
        stride 1 and "same" padding). dense_flops: the dense layer of the same shape and geometry.
        """
        if not self.conv:
            dense = 2 * _macs_linear(layer, (), None)
            return 2 * self._macs(layer, self.ranks(layer), None), dense, "per sample"
        hw = _input_hw(input_hw)
        kh, kw = self.kernel(layer)
        if hw is None:
            h = w = ho = wo = 1
            mid = 1
            basis = "per output position"
        else:
            h, w = hw
            (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
            ho, wo = output_size(h, kh, sh, ph, dh), output_size(w, kw, sw, pw, dw)
            mid = ho * w
            basis = f"per {h}x{w} image"
        g = {"kh": kh, "kw": kw, "in_pos": h * w, "out_pos": ho * wo, "mid_pos": mid}
        dense = 2 * _macs_conv(layer, (), g)
        return 2 * self._macs(layer, self.ranks(layer), g), dense, basis

    # -- computing ---------------------------------------------------------------------------

    def to_dense(self, layer) -> np.ndarray:
        """The float64 dense weight the factors multiply out to: (out, in) or (out, in, kh, kw)."""
        return self._dense(self.factors(layer))

    def activation(self, layer):
        """The layer's fused output clamp: None, "relu", "relu6" or (min, max) (None for objects
        without one)."""
        return getattr(layer, "activation", None)

    def run_reference(self, layer, x) -> np.ndarray:
        """The float64 reference output of the layer on x (its own factors, bias, geometry and
        activation)."""
        return self.reference(
            x, *self.factors(layer), layer.bias, **self.geometry(layer),
            activation=self.activation(layer),
        )  # fmt: skip

    def dense_equivalent(self, layer, weight=None, *, bias=_KEEP_BIAS, activation=_KEEP_BIAS):
        """The dense layer (Linear or Conv2d, same geometry and layout) of `weight`, by default
        ``to_dense(layer)``, with the layer's own bias and activation unless bias= / activation=
        is given (None: no bias / no clamp)."""
        W = self.to_dense(layer) if weight is None else _f64(weight)
        b = layer.bias if bias is _KEEP_BIAS else bias
        act = self.activation(layer) if activation is _KEEP_BIAS else activation
        W32 = np.ascontiguousarray(W, dtype=np.float32)
        b32 = None if b is None else np.ascontiguousarray(b, dtype=np.float32)
        if not self.conv:
            return _core.Linear(W32, b32, activation=act)
        return _core.Conv2d(W32, b32, **self.geometry(layer), activation=act)


def _dense_baseline(name, cls, conv, weight_name, weight_dims, reference_fn, shapes, macs):
    """The spec of a dense baseline (Linear, Conv2d): one weight, no rank, no decomposer."""
    factors = dict(factor_names=(weight_name,), factor_dims=(weight_dims,))
    dense = dict(factorized=False, decomposer=None, _dense=_dense_single, _num_ranks=0)
    return LayerSpec(
        name, cls, conv, reference=reference_fn, _shapes=shapes, _macs=macs, **factors, **dense
    )


def _make_specs():
    # The decomposers live in lrkernels.decompose (numpy only), which does not import this module.
    from . import decompose as d

    return (
        LayerSpec(
            name="LowRankLinear", cls=_core.LowRankLinear, conv=False, factorized=True,
            factor_names=("U", "V"),
            factor_dims=("(out_features, rank)", "(rank, in_features)"),
            reference=reference.lowrank_linear, decomposer=d.lowrank_linear_from_dense,
            _dense=_dense_lowrank, _shapes=_shapes_lowrank, _macs=_macs_lowrank, _num_ranks=1,
        ),
        _dense_baseline(
            "Linear", _core.Linear, False, "W", "(out_features, in_features)",
            reference.linear, _shapes_linear, _macs_linear,
        ),
        LayerSpec(
            name="TuckerConv2d", cls=_core.TuckerConv2d, conv=True, factorized=True,
            factor_names=("first", "core", "last"),
            factor_dims=("(R_in, in_channels)", "(R_out, R_in, kh, kw)", "(out_channels, R_out)"),
            reference=reference.tucker_conv2d, decomposer=d.tucker_conv2d_from_dense,
            _dense=_dense_tucker, _shapes=_shapes_tucker, _macs=_macs_tucker, _num_ranks=2,
        ),
        LayerSpec(
            name="CPConv2d", cls=_core.CPConv2d, conv=True, factorized=True,
            factor_names=("first", "vertical", "horizontal", "last"),
            factor_dims=("(R, in_channels)", "(R, kh)", "(R, kw)", "(out_channels, R)"),
            reference=reference.cp_conv2d, decomposer=d.cp_conv2d_from_dense,
            _dense=_dense_cp, _shapes=_shapes_cp, _macs=_macs_cp, _num_ranks=1,
        ),
        _dense_baseline(
            "Conv2d", _core.Conv2d, True, "weight", "(out_channels, in_channels, kh, kw)",
            reference.conv2d, _shapes_conv, _macs_conv,
        ),
    )  # fmt: skip


SPECS: tuple = _make_specs()
_BY_CLASS = {s.cls: s for s in SPECS}
_BY_NAME = {s.name: s for s in SPECS}


def _install():
    # LowRankLinear.from_dense, TuckerConv2d.from_dense, CPConv2d.from_dense: from the table.
    from .decompose.from_dense import install_from_dense

    install_from_dense(SPECS)


_install()


def spec_for(obj) -> LayerSpec:
    """The LayerSpec of a layer instance, a layer class (user subclasses resolve to their nearest
    lrkernels base) or a kind name ("TuckerConv2d"); TypeError for anything else."""
    if isinstance(obj, LayerSpec):
        return obj
    if isinstance(obj, str):
        try:
            return _BY_NAME[obj]
        except KeyError:
            raise TypeError(
                f"unknown layer kind {obj!r}; the kinds are {', '.join(_BY_NAME)}"
            ) from None
    cls = obj if isinstance(obj, type) else type(obj)
    for base in cls.__mro__:  # most derived first
        spec = _BY_CLASS.get(base)
        if spec is not None:
            return spec
    raise TypeError(
        f"unsupported layer type {cls.__name__}; the layer kinds are {', '.join(_BY_NAME)}"
    )
