"""Factorized ``nn.Module``s whose parameters are the factors, running on the fused kernels.

Each module trains like any torch module (its forward is plain torch ops whenever autograd, a
tracer, an exporter or a non-CPU/non-float32 tensor is involved) and, in inference on CPU float32
tensors, calls the fused lrkernels layer: no copy of a contiguous input (NCHW as NCHW, a
``channels_last`` tensor as NHWC), the output returned as a torch tensor sharing the kernel's
buffer. The packed kernel layer is rebuilt when a parameter changes (an optimizer step, a
``load_state_dict``, ``.to()``, assigning a parameter): the check is the parameters' version
counters and storages and the count of optimizer steps (fused optimizers do not bump versions).
Only in-place writes through ``param.data`` (``p.data.mul_(2)``) go unseen: call
``module.refresh()`` after them.

``precision`` ("fp32" default, "fp16", "int8"; LowRankLinear, TuckerConv2d, Linear, Conv2d) is
the precision of the fused inference kernel only (``lrkernels.<Kind>(..., precision=)``:
fp16-stored weights, or int8 arithmetic on dynamically quantized inputs); the parameters stay
float32 and training (the torch-ops path) computes in float32 whatever it is. Setting it repacks
the kernel on the next inference call. CPConv2d has fp32 kernels only (precision "fp32").
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

import lrkernels
from lrkernels.reference import output_bounds

__all__ = [
    "PRECISIONS",
    "CPConv2d",
    "Conv2d",
    "FactorizedModule",
    "Linear",
    "LowRankLinear",
    "TuckerConv2d",
    "module_for_kind",
]


# The per-call checks of the fused path, bound once (each attribute lookup costs on a 1 us call).
_Tensor = torch.Tensor
_F32 = torch.float32
_VERSION = torch.Tensor._version.__get__
_DATA_PTR = torch.Tensor.data_ptr
_OPTIMIZER_STEPS = [0]  # every optimizer step anywhere: fused optimizers leave versions as is


def _count_optimizer_step(optimizer, args, kwargs):
    _OPTIMIZER_STEPS[0] += 1


register_optimizer_step_post_hook(_count_optimizer_step)

_grad_enabled = torch.is_grad_enabled
_tracing_state = torch._C._get_tracing_state
_is_compiling = torch.compiler.is_compiling
_CHANNELS_LAST = torch.channels_last

PRECISIONS = ("fp32", "fp16", "int8")  # the precisions of lrkernels' fused layers


def check_precision(precision, supported=PRECISIONS, owner=None):
    """``precision`` if it is one of ``supported``; ValueError listing the choices otherwise
    (``owner``: the class name, for a precision lrkernels has but that class has no kernels
    for)."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}"
        )
    if precision not in supported:
        raise ValueError(
            f"{owner} has no {precision} kernels (lrkernels.{owner} runs at fp32 only): "
            f"precision must be {' or '.join(map(repr, supported))}, got {precision!r}"
        )
    return precision


def canonical_activation(activation):
    """None, "relu", "relu6" or a (min, max) pair (None for an open side) -> None, the name, or
    the (float, float) bounds as the kernels store them; ValueError/TypeError otherwise (the
    checks of ``lrkernels.reference.output_bounds``, the same as the layers')."""
    bounds = output_bounds(activation)
    return activation if activation is None or isinstance(activation, str) else bounds


def activation_bounds(activation):
    """(min, max) of an activation; (-inf, inf) for None."""
    return output_bounds(activation)


def apply_activation(y, activation):
    """The activation in torch ops (NaN propagates, as in the kernels)."""
    if activation is None:
        return y
    if activation == "relu":
        return F.relu(y)
    if activation == "relu6":
        return F.relu6(y)
    lo, hi = activation
    return torch.clamp(y, None if lo == -math.inf else lo, None if hi == math.inf else hi)


def _pair(v, name):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    try:
        a, b = v
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in (a, b)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    return (a, b)


def _uniform_(t, bound):
    with torch.no_grad():
        t.uniform_(-bound, bound)


class FactorizedModule(nn.Module):
    """Base of the factorized modules: parameters named as the lrkernels layer's factors, the
    kernel-layer cache, and the choice between the fused kernel and torch ops.

    ``use_kernels`` (default True): set False to always run torch ops (e.g. to compare).
    ``precision`` ("fp32", "fp16", "int8"; as many of them as ``precisions`` lists): the
    precision of the fused inference kernel only; training and the torch-ops path stay float32.
    Setting it repacks the kernel.
    """

    kind: str = ""  # the lrkernels layer kind ("LowRankLinear", ...)
    factor_names: tuple = ()
    output_factor = "last"  # the factor whose rows are the output channels (BatchNorm folding)
    is_conv = False
    precisions = PRECISIONS  # the precisions the lrkernels layer of this kind has kernels for

    def __init__(self, activation=None, precision="fp32"):
        super().__init__()
        self.activation = activation
        self.precision = precision
        self.use_kernels = True
        self.rank_choice = None  # how the rank was found (from_linear / from_conv), if known
        self._kernels = {}  # layout -> (version key, lrkernels layer or None)

    def __setattr__(self, name, value):
        if name == "activation":
            value = canonical_activation(value)
        elif name == "precision":
            value = check_precision(value, self.precisions, type(self).__name__)
        super().__setattr__(name, value)
        if name in ("activation", "precision", "bias") or name in self.factor_names:
            self.refresh()  # a new parameter object or activation: the packed layer is stale

    def train(self, mode=True):
        self.refresh()  # a train -> eval switch is where a stale pack would first show
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        # .to() / .float() / .cpu() may swap parameter storage without a version bump
        result = super()._apply(fn, *args, **kwargs)
        self.refresh()
        return result

    def _init_bias(self, bias, n):
        if bias:
            self.bias = nn.Parameter(torch.empty(n))
        else:
            self.register_parameter("bias", None)

    def _load_factors(self, tensors, bias):
        """Copy ``tensors`` (in factor order) and ``bias`` into the parameters; returns self."""
        with torch.no_grad():
            for name, t in zip(self.factor_names, tensors):
                getattr(self, name).copy_(t)
            if bias is not None:
                self.bias.copy_(torch.as_tensor(bias))
        return self

    # -- the factors as given to lrkernels ---------------------------------------------------
    def _params(self):
        """The factor parameters then the bias (if any), read from ``self._parameters`` on every
        call (nn.Module's attribute lookup costs ~0.4 us a parameter; a cached tuple would miss
        ``torch.func.functional_call``). None when a factor is not a plain parameter there (a
        pruning or parametrization hook owns it): torch ops then."""
        params = self._parameters
        names = self.__dict__.get("_pnames")
        if names is None:  # the factors, and the bias when there is one (reset by refresh())
            names = self.factor_names + (("bias",) if params.get("bias") is not None else ())
            self.__dict__["_pnames"] = names
        try:
            ps = tuple(map(params.__getitem__, names))
        except KeyError:
            return None
        if ps[-1] is None:  # a bias set to None by register_parameter: the names again
            if names[-1] != "bias":
                return None
            self.__dict__["_pnames"] = None
            return self._params()
        return ps

    def __getstate__(self):
        # The packed kernel layers are a cache (and not picklable): copies repack on first use.
        state = self.__dict__.copy()
        state["_kernels"] = {}
        state["_pnames"] = None
        return state

    def refresh(self):
        """Drop the packed kernel layers: the next inference call repacks the current factors.
        Needed only after an in-place write through ``.data`` (``p.data.mul_(2)``: invisible to
        autograd's version counter); optimizer steps (fused ones too), in-place updates,
        ``load_state_dict``, ``.to()``, ``p.data = t`` and new parameters are seen."""
        self.__dict__["_kernels"] = {}
        self.__dict__["_pnames"] = None

    def _geometry_kwargs(self):
        return {}

    def to_layer(self, layout="NCHW"):
        """The lrkernels layer computing this module (a new one, packed from the current factors,
        float32, with the fused activation, at ``self.precision``); ``layout`` only for
        convolutions."""
        factors = [
            getattr(self, n).detach().to("cpu", torch.float32).numpy() for n in self.factor_names
        ]
        bias = None if self.bias is None else self.bias.detach().to("cpu", torch.float32).numpy()
        kwargs = self._geometry_kwargs()
        if self.is_conv:
            kwargs["layout"] = layout
        if self.activation is not None:
            kwargs["activation"] = self.activation
        if self.precision != "fp32":  # CPConv2d takes no precision keyword
            kwargs["precision"] = self.precision
        return getattr(lrkernels, self.kind)(*factors, bias, **kwargs)

    def _fused_layer(self, x, layout):
        """The packed lrkernels layer that computes this call, or None when torch ops must:
        autograd, tracing/compiling, a tensor that is not a plain CPU float32 one, parameters
        not float32 on the CPU. Repacks when a parameter's version or storage changed."""
        if (
            not (type(x) is _Tensor and x.dtype is _F32 and x.is_cpu and not x.requires_grad)
            or not self.use_kernels
        ):
            return None
        ps = self._params()
        if ps is None or (_grad_enabled() and any(p.requires_grad for p in ps)):
            return None
        if _tracing_state() is not None or _is_compiling():
            return None
        # Versions only grow, so their sum changes whenever one does (in-place updates); the
        # storages catch new tensors (assignment, functional_call, p.data = t, .to()); the
        # optimizer step count catches fused optimizers, which do not bump versions.
        key = (_OPTIMIZER_STEPS[0], sum(map(_VERSION, ps)), *map(_DATA_PTR, ps))
        entry = self._kernels.get(layout)
        if entry is None or entry[0] != key:
            usable = all(p.is_cpu and p.dtype is _F32 for p in ps)
            entry = (key, self.to_layer(layout) if usable else None)
            self._kernels[layout] = entry
        return entry[1]

    @classmethod
    def from_layer(cls, layer, *, rank_choice=None):
        """The module of an lrkernels layer of the same kind (factors copied as parameters;
        geometry, activation and precision taken from the layer)."""
        if layer.kind != cls.kind:
            raise TypeError(
                f"{cls.__name__}.from_layer needs a lrkernels.{cls.kind}, got {layer.kind}"
            )
        factors = [torch.from_numpy(np.array(f, np.float32)) for f in layer.factors]
        bias = None if layer.bias is None else torch.from_numpy(np.array(layer.bias, np.float32))
        kwargs = {}
        if cls.is_conv:
            kwargs = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
        activation = getattr(layer, "activation", None)
        m = cls.from_factors(*factors, bias, activation=activation, **kwargs)
        m.precision = getattr(layer, "precision", "fp32")
        m.rank_choice = (
            rank_choice if rank_choice is not None else getattr(layer, "rank_choice", None)
        )
        return m

    def _state_repr(self):
        s = ""
        if self.bias is None:
            s += ", bias=False"
        if self.activation is not None:
            s += f", activation={self.activation!r}"
        if self.precision != "fp32":
            s += f", precision={self.precision!r}"
        return s


class _LinearBase(FactorizedModule):
    """Shared by the linear layers: the fused call on any leading dimensions, as nn.Linear."""

    def forward(self, x):
        layer = self._fused_layer(x, None)
        if layer is not None:
            if x.ndim <= 2:
                return torch.from_numpy(layer(x.numpy()))
            lead = x.shape[:-1]
            y = layer(x.reshape(-1, x.shape[-1]).numpy())
            return torch.from_numpy(y).reshape(*lead, y.shape[-1])
        return apply_activation(self._forward_torch(x), self.activation)


class LowRankLinear(_LinearBase):
    """y = U (V x) + bias: a linear layer of rank ``rank`` (parameters ``U`` (out, rank), ``V``
    (rank, in), ``bias`` (out)), any leading dimensions as nn.Linear. In inference on CPU float32
    input the two stages run fused in one lrkernels call.

    ``LowRankLinear(in_features, out_features, rank, bias=True, activation=None,
    precision="fp32")`` initializes like nn.Linear (U V has nn.Linear's output scale);
    ``from_factors(U, V, bias)``; ``from_linear(nn.Linear, rank= | energy= | ratio= | vbmf=True,
    calibration=None)``. ``activation``: None, "relu", "relu6" or (min, max), fused into the
    kernel's output store. ``precision``: "fp32", "fp16" or "int8", the fused inference kernel's
    (training stays float32).
    """

    kind = "LowRankLinear"
    factor_names = ("U", "V")
    output_factor = "U"

    def __init__(
        self, in_features, out_features, rank, bias=True, activation=None, precision="fp32"
    ):
        super().__init__(activation, precision)
        for name, v in (
            ("in_features", in_features),
            ("out_features", out_features),
            ("rank", rank),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.U = nn.Parameter(torch.empty(out_features, rank))
        self.V = nn.Parameter(torch.empty(rank, in_features))
        self._init_bias(bias, out_features)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.in_features)
        _uniform_(self.V, bound)
        _uniform_(self.U, math.sqrt(3.0 / self.rank))  # E (UV)_ij^2 = E x^2 of nn.Linear's init
        with torch.no_grad():
            self.U.mul_(1.0 / math.sqrt(3.0))
        if self.bias is not None:
            _uniform_(self.bias, bound)

    @classmethod
    def from_factors(cls, U, V, bias=None, *, activation=None, precision="fp32"):
        U, V = torch.as_tensor(U), torch.as_tensor(V)
        if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[0]:
            raise ValueError(
                "LowRankLinear needs U (out, rank) and V (rank, in), "
                f"got {tuple(U.shape)} and {tuple(V.shape)}"
            )
        if bias is not None and tuple(torch.as_tensor(bias).shape) != (U.shape[0],):
            raise ValueError(
                f"bias must have shape ({U.shape[0]},), got {tuple(torch.as_tensor(bias).shape)}"
            )
        m = cls(
            V.shape[1],
            U.shape[0],
            U.shape[1],
            bias=bias is not None,
            activation=activation,
            precision=precision,
        )
        return m._load_factors((U, V), bias)

    @classmethod
    def from_linear(cls, linear, *, precision="fp32", **criterion):
        """From an nn.Linear by one criterion of ``lrkernels.LowRankLinear.from_dense`` (rank=,
        energy=, ratio=, vbmf=True; calibration= inputs (n, in_features) as a tensor or array);
        ``precision``: the fused inference kernel's (the fit is float32)."""
        from .convert import factorize_linear

        check_precision(precision, cls.precisions, cls.__name__)
        m = factorize_linear(linear, layer_class=cls, **criterion)
        m.precision = precision
        return m

    def _forward_torch(self, x):
        return F.linear(F.linear(x, self.V), self.U, self.bias)

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
            + self._state_repr()
        )


class _FactorizedConv(FactorizedModule):
    """Shared by the convolutions: geometry, layouts, the fused call."""

    is_conv = True

    def _init_geometry(self, in_channels, out_channels, kernel_size, stride, padding, dilation):
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        for name in ("kernel_size", "stride", "dilation"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if min(self.padding) < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")

    def _geometry_kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)

    def forward(self, x):
        if x.ndim == 4:
            if x.is_contiguous() or not x.is_contiguous(memory_format=_CHANNELS_LAST):
                layer = self._fused_layer(x, "NCHW")
                if layer is not None:
                    return torch.from_numpy(layer(x.contiguous().numpy()))
            else:  # channels_last: the same memory read as NHWC, the output likewise
                layer = self._fused_layer(x, "NHWC")
                if layer is not None:
                    y = layer(x.permute(0, 2, 3, 1).numpy())
                    return torch.from_numpy(y).permute(0, 3, 1, 2)
        elif x.ndim == 3 and self._fused_layer(x, "NCHW") is not None:
            return self.forward(x.unsqueeze(0)).squeeze(0)  # unbatched (C, H, W)
        return apply_activation(self._forward_torch(x), self.activation)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        s += f", rank={self.rank}"
        if self.stride != (1, 1):
            s += f", stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s + self._state_repr()

    @classmethod
    def from_conv(cls, conv, *, precision="fp32", **criterion):
        """From an nn.Conv2d (stride, padding, dilation and bias read from it; groups=1 and
        zero padding only) by one criterion of the lrkernels class's ``from_dense`` (rank=,
        energy=, ratio=, vbmf=True; calibration= NCHW images as a tensor or array);
        ``precision``: the fused inference kernel's (the fit is float32; CPConv2d: "fp32")."""
        from .convert import factorize_conv

        check_precision(precision, cls.precisions, cls.__name__)
        m = factorize_conv(conv, layer_class=cls, **criterion)
        m.precision = precision
        return m


class TuckerConv2d(_FactorizedConv):
    """Tucker-2 convolution: 1x1 (``first`` (R_in, C_in)) -> kxk (``core`` (R_out, R_in, kh, kw),
    with the stride, padding and dilation) -> 1x1 (``last`` (C_out, R_out)) + ``bias``; the three
    stages run fused in one lrkernels call in inference on CPU float32 input.

    ``TuckerConv2d(in_channels, out_channels, kernel_size, rank, stride=1, padding=0,
    dilation=1, bias=True, activation=None, precision="fp32")`` (rank an int or (R_in, R_out));
    ``from_factors(first, core, last, bias, ...)``; ``from_conv(nn.Conv2d, **criterion)``.
    ``precision``: "fp32", "fp16" or "int8", the fused inference kernel's (training stays
    float32).
    """

    kind = "TuckerConv2d"
    factor_names = ("first", "core", "last")

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        rank,
        stride=1,
        padding=0,
        dilation=1,
        bias=True,
        activation=None,
        precision="fp32",
    ):
        super().__init__(activation, precision)
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation)
        r_in, r_out = _pair(rank, "rank")
        if min(r_in, r_out) < 1:
            raise ValueError(f"rank must be >= 1, got {rank!r}")
        self.rank = (r_in, r_out)
        kh, kw = self.kernel_size
        self.first = nn.Parameter(torch.empty(r_in, in_channels))
        self.core = nn.Parameter(torch.empty(r_out, r_in, kh, kw))
        self.last = nn.Parameter(torch.empty(out_channels, r_out))
        self._init_bias(bias, out_channels)
        self.reset_parameters()

    def reset_parameters(self):
        kh, kw = self.kernel_size
        _uniform_(self.first, math.sqrt(3.0 / self.in_channels))
        _uniform_(self.core, math.sqrt(3.0 / (self.rank[0] * kh * kw)))
        _uniform_(self.last, math.sqrt(1.0 / self.rank[1]))  # ~ nn.Conv2d's output scale
        if self.bias is not None:
            _uniform_(self.bias, 1.0 / math.sqrt(self.in_channels * kh * kw))

    @classmethod
    def from_factors(
        cls,
        first,
        core,
        last,
        bias=None,
        *,
        stride=1,
        padding=0,
        dilation=1,
        activation=None,
        precision="fp32",
    ):
        first, core, last = (torch.as_tensor(t) for t in (first, core, last))
        if (
            (first.ndim, core.ndim, last.ndim) != (2, 4, 2)
            or core.shape[1] != first.shape[0]
            or (last.shape[1] != core.shape[0])
        ):
            raise ValueError(
                "TuckerConv2d needs first (R_in, C_in), core (R_out, R_in, kh, kw), "
                "last (C_out, R_out), "
                f"got {tuple(first.shape)}, {tuple(core.shape)}, {tuple(last.shape)}"
            )
        if bias is not None and tuple(torch.as_tensor(bias).shape) != (last.shape[0],):
            raise ValueError(
                f"bias must have shape ({last.shape[0]},), got {tuple(torch.as_tensor(bias).shape)}"
            )
        m = cls(
            first.shape[1],
            last.shape[0],
            tuple(core.shape[2:]),
            (first.shape[0], core.shape[0]),
            stride,
            padding,
            dilation,
            bias=bias is not None,
            activation=activation,
            precision=precision,
        )
        return m._load_factors((first, core, last), bias)

    def _forward_torch(self, x):
        y = F.conv2d(x, self.first[:, :, None, None])
        y = F.conv2d(y, self.core, None, self.stride, self.padding, self.dilation)
        return F.conv2d(y, self.last[:, :, None, None], self.bias)


class CPConv2d(_FactorizedConv):
    """CP convolution: 1x1 (``first`` (R, C_in)) -> kh x 1 depthwise (``vertical`` (R, kh)) ->
    1 x kw depthwise (``horizontal`` (R, kw)) -> 1x1 (``last`` (C_out, R)) + ``bias``, fused in
    one lrkernels call in inference on CPU float32 input.

    ``CPConv2d(in_channels, out_channels, kernel_size, rank, stride=1, padding=0, dilation=1,
    bias=True, activation=None)``; ``from_factors(first, vertical, horizontal, last, bias,
    ...)``; ``from_conv(nn.Conv2d, **criterion)``. ``precision`` is "fp32" only
    (``lrkernels.CPConv2d`` has no fp16/int8 kernels): setting another raises ValueError.
    """

    kind = "CPConv2d"
    factor_names = ("first", "vertical", "horizontal", "last")
    precisions = ("fp32",)

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        rank,
        stride=1,
        padding=0,
        dilation=1,
        bias=True,
        activation=None,
    ):
        super().__init__(activation)
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation)
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        self.rank = rank
        kh, kw = self.kernel_size
        self.first = nn.Parameter(torch.empty(rank, in_channels))
        self.vertical = nn.Parameter(torch.empty(rank, kh))
        self.horizontal = nn.Parameter(torch.empty(rank, kw))
        self.last = nn.Parameter(torch.empty(out_channels, rank))
        self._init_bias(bias, out_channels)
        self.reset_parameters()

    def reset_parameters(self):
        kh, kw = self.kernel_size
        _uniform_(self.first, math.sqrt(3.0 / self.in_channels))
        _uniform_(self.vertical, math.sqrt(3.0 / kh))
        _uniform_(self.horizontal, math.sqrt(3.0 / kw))
        _uniform_(self.last, math.sqrt(1.0 / self.rank))
        if self.bias is not None:
            _uniform_(self.bias, 1.0 / math.sqrt(self.in_channels * kh * kw))

    @classmethod
    def from_factors(
        cls,
        first,
        vertical,
        horizontal,
        last,
        bias=None,
        *,
        stride=1,
        padding=0,
        dilation=1,
        activation=None,
    ):
        first, vertical, horizontal, last = (
            torch.as_tensor(t) for t in (first, vertical, horizontal, last)
        )
        r = first.shape[0] if first.ndim == 2 else -1
        if (first.ndim, vertical.ndim, horizontal.ndim, last.ndim) != (2, 2, 2, 2) or not (
            vertical.shape[0] == horizontal.shape[0] == last.shape[1] == r
        ):
            raise ValueError(
                "CPConv2d needs first (R, C_in), vertical (R, kh), horizontal (R, kw), "
                f"last (C_out, R), got {tuple(first.shape)}, {tuple(vertical.shape)}, "
                f"{tuple(horizontal.shape)}, {tuple(last.shape)}"
            )
        if bias is not None and tuple(torch.as_tensor(bias).shape) != (last.shape[0],):
            raise ValueError(
                f"bias must have shape ({last.shape[0]},), got {tuple(torch.as_tensor(bias).shape)}"
            )
        m = cls(
            first.shape[1],
            last.shape[0],
            (vertical.shape[1], horizontal.shape[1]),
            r,
            stride,
            padding,
            dilation,
            bias=bias is not None,
            activation=activation,
        )
        return m._load_factors((first, vertical, horizontal, last), bias)

    def _forward_torch(self, x):
        r = self.rank
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        y = F.conv2d(x, self.first[:, :, None, None])
        y = F.conv2d(y, self.vertical[:, None, :, None], None, (sh, 1), (ph, 0), (dh, 1), r)
        y = F.conv2d(y, self.horizontal[:, None, None, :], None, (1, sw), (0, pw), (1, dw), r)
        return F.conv2d(y, self.last[:, :, None, None], self.bias)


class Linear(_LinearBase):
    """The dense linear layer (``weight`` (out, in), ``bias``) on the lrkernels engine: what
    ``fuse`` turns an nn.Linear into, so that a BatchNorm folds into it and an activation fuses
    into its output store. ``Linear.from_linear(nn.Linear)`` copies the weights. ``precision``:
    "fp32", "fp16" or "int8", the fused inference kernel's (training stays float32)."""

    kind = "Linear"
    factor_names = ("weight",)
    output_factor = "weight"

    def __init__(self, in_features, out_features, bias=True, activation=None, precision="fp32"):
        super().__init__(activation, precision)
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self._init_bias(bias, out_features)
        bound = 1.0 / math.sqrt(in_features)
        _uniform_(self.weight, bound)
        if bias:
            _uniform_(self.bias, bound)

    @classmethod
    def from_factors(cls, weight, bias=None, *, activation=None, precision="fp32"):
        weight = torch.as_tensor(weight)
        if weight.ndim != 2:
            raise ValueError(f"Linear needs a weight (out, in), got {tuple(weight.shape)}")
        m = cls(
            weight.shape[1],
            weight.shape[0],
            bias=bias is not None,
            activation=activation,
            precision=precision,
        )
        return m._load_factors((weight,), bias)

    @classmethod
    def from_linear(cls, linear, *, precision="fp32"):
        """The same layer (weights copied) on the lrkernels engine, its fused kernel at
        ``precision``."""
        if type(linear) is not nn.Linear:
            raise TypeError(f"Linear.from_linear needs an nn.Linear, got {type(linear).__name__}")
        m = cls.from_factors(
            linear.weight.detach(),
            None if linear.bias is None else linear.bias.detach(),
            precision=precision,
        )
        return m.to(linear.weight.device, linear.weight.dtype)

    def _forward_torch(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        s = f"in_features={self.in_features}, out_features={self.out_features}"
        return s + self._state_repr()


class Conv2d(_FactorizedConv):
    """The dense convolution (``weight`` (out, in, kh, kw), ``bias``; groups=1, zero padding) on
    the lrkernels engine: what ``fuse`` turns an nn.Conv2d into (a BatchNorm folded, the
    activation fused). ``Conv2d.from_conv(nn.Conv2d)`` copies the weights. ``precision``:
    "fp32", "fp16" or "int8", the fused inference kernel's (training stays float32)."""

    kind = "Conv2d"
    factor_names = ("weight",)
    output_factor = "weight"

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=True,
        activation=None,
        precision="fp32",
    ):
        super().__init__(activation, precision)
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation)
        self.rank = None
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh, kw))
        self._init_bias(bias, out_channels)
        bound = 1.0 / math.sqrt(in_channels * kh * kw)
        _uniform_(self.weight, bound)
        if bias:
            _uniform_(self.bias, bound)

    @classmethod
    def from_factors(
        cls,
        weight,
        bias=None,
        *,
        stride=1,
        padding=0,
        dilation=1,
        activation=None,
        precision="fp32",
    ):
        weight = torch.as_tensor(weight)
        if weight.ndim != 4:
            raise ValueError(f"Conv2d needs a weight (out, in, kh, kw), got {tuple(weight.shape)}")
        m = cls(
            weight.shape[1],
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride,
            padding,
            dilation,
            bias=bias is not None,
            activation=activation,
            precision=precision,
        )
        return m._load_factors((weight,), bias)

    @classmethod
    def from_conv(cls, conv, *, precision="fp32"):
        """The same convolution (weights copied) on the lrkernels engine, its fused kernel at
        ``precision``; ValueError for what it cannot run (groups > 1, non-zero padding modes,
        asymmetric 'same' padding)."""
        from .convert import conv_padding, why_not_factorizable

        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"Conv2d.from_conv needs an nn.Conv2d, got {type(conv).__name__}")
        reason = why_not_factorizable(conv)
        if reason and "no lower rank" not in reason:  # a 1-channel conv is fine dense
            raise ValueError(f"cannot run this nn.Conv2d on lrkernels: {reason}")
        m = cls.from_factors(
            conv.weight.detach(),
            None if conv.bias is None else conv.bias.detach(),
            stride=tuple(conv.stride),
            padding=conv_padding(conv),
            dilation=tuple(conv.dilation),
            precision=precision,
        )
        return m.to(conv.weight.device, conv.weight.dtype)

    def _forward_torch(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        for name, default in (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1))):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s + self._state_repr()


_MODULES = {m.kind: m for m in (LowRankLinear, TuckerConv2d, CPConv2d, Linear, Conv2d)}


def module_for_kind(kind):
    """The module class of an lrkernels layer kind ("TuckerConv2d" -> TuckerConv2d)."""
    try:
        return _MODULES[kind]
    except KeyError:
        raise ValueError(
            f"no lrkernels.torch module for layer kind {kind!r}; have {sorted(_MODULES)}"
        ) from None
