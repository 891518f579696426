"""lrkernels: fused kernels for factorized (low-rank) neural-network layers on ARM and x86 CPUs.

Layers (every one takes and returns float32; precision="fp16" | "int8" on LowRankLinear,
Linear, TuckerConv2d and Conv2d picks fp16-stored weights or int8 arithmetic: see reference)
------
LowRankLinear(U, V, bias=None)   y = U (V x) + bias, both stages fused in one call
Linear(W, bias=None)             the dense layer on the same engine (the baseline)
TuckerConv2d(first, core, last, bias=None, *, stride, padding, dilation, layout)
                                 1x1 -> kxk -> 1x1 Tucker-2 convolution, fused
CPConv2d(first, vertical, horizontal, last, bias=None, *, stride, padding, dilation, layout)
                                 1x1 -> kh x 1 -> 1 x kw depthwise -> 1x1 CP convolution, fused
Conv2d(weight, bias=None, *, stride, padding, dilation, layout)
                                 the dense convolution on the same engine
LowRankLSTM((U_ih, V_ih), (U_hh, V_hh), bias_ih, bias_hh, *, batch_first)
LowRankGRU(...)                  one recurrent layer, one direction, torch's gate order; the whole
                                 sequence per call in C++ (``lrkernels.recurrent``); LSTM, GRU dense
LowRankEmbedding(A, B, *, padding_idx)  table A @ B, gather + GEMM in one call; Embedding dense

Kernel selection
----------------
available_isas()  ISAs this build has and this CPU supports ('scalar', 'neon', 'avx2', 'avx512')
cpu_features()    finer features the fp16/int8 kernels choose by ('asimddp', 'avx512_vnni', ...);
                  set_disabled_cpu_features(['asimddp']) forces the fallbacks (tests), [] undoes it;
                  LRKERNELS_DISABLE_FEATURES=a,b at import; last_used_kernel() names the GEMM
                  family of this thread's last layer call
get_isa(), set_isa(name)  the ISA layer calls use; LRKERNELS_ISA=name sets it at import
set_num_threads(n), get_num_threads()  threads per layer call (default: the CPUs this process
                  may use; LRKERNELS_NUM_THREADS=n at import); results do not depend on it
info()            build and CPU facts

``lrkernels.reference`` holds the numpy implementation of every kernel (the test oracle).

From trained dense weights
--------------------------
LowRankLinear.from_dense(weight, bias, *, rank= | energy= | ratio= | vbmf=True, calibration=None)
TuckerConv2d.from_dense(weight, bias, *, rank= | energy= | ratio= | vbmf=True, calibration, ...)
                  rank=(r_in, r_out) or an int; ranks= is the same keyword
CPConv2d.from_dense(weight, bias, *, rank= | energy= | ratio=, calibration=None, ...)
All build ``cls``: a subclass's from_dense returns the subclass. ``lrkernels.decompose`` (svd,
tucker2, cp), ``lrkernels.rank`` (the criteria, each with its reason), ``lrkernels.report``
(parameters, FLOPs, compression, weight and output error).

Saving and loading (numpy only, no pickle)
------------------------------------------
save_layers({name: layer}, path, *, metadata=None, extra_arrays=None), load_layers(path)
write_archive(path, header, arrays), read_archive(path) -> (header, arrays)
                  ``lrkernels.archive`` (also describe_layer, build_layer): the file format

``lrkernels.layer_specs`` is the one table of the layer kinds (factor names, reference function,
dense reconstruction, parameter and FLOP counts, decomposer): ``spec_for(layer_or_class_or_name)``.
"""

from __future__ import annotations

import os as _os
import platform as _platform

from . import reference
from ._core import (
    Conv2d,
    CPConv2d,
    Linear,
    LowRankLinear,
    TuckerConv2d,
    __version__,
    available_isas,
    get_isa,
    get_num_threads,
    last_used_isa,
    set_isa,
    set_num_threads,
    cpu_features,
    disabled_cpu_features,
    set_disabled_cpu_features,
    last_used_kernel,
)
from . import _core

Layer = _core.Layer  # the base class of every layer


def _python_init(cls):
    """Wraps the native __init__: a second call is an error (pybind would ignore it silently), and
    help() shows the real signature, from the class's factor names."""
    import inspect

    native_init = cls.__init__
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD)]
    params += [P(name, P.POSITIONAL_OR_KEYWORD) for name in cls.factor_names]
    params.append(P("bias", P.POSITIONAL_OR_KEYWORD, default=None))
    if "in_channels" in dir(cls):
        params += [
            P("stride", P.KEYWORD_ONLY, default=1),
            P("padding", P.KEYWORD_ONLY, default=0),
            P("dilation", P.KEYWORD_ONLY, default=1),
            P("layout", P.KEYWORD_ONLY, default="NCHW"),
            P("algorithm", P.KEYWORD_ONLY, default="auto"),
        ]
    params.append(P("activation", P.KEYWORD_ONLY, default=None))
    if cls.__name__ != "CPConv2d":
        params.append(P("precision", P.KEYWORD_ONLY, default="fp32"))

    def __init__(self, *args, **kwargs):
        if self._initialized:
            raise TypeError(
                f"{type(self).__name__} is already initialized; layers are immutable "
                "once created: create a new one"
            )
        native_init(self, *args, **kwargs)

    __init__.__signature__ = inspect.Signature(params)
    __init__.__doc__ = cls.__doc__
    __init__.__qualname__ = f"{cls.__name__}.__init__"
    cls.__init__ = __init__


def _layer_setattr(self, name, value):
    """Layers take new attributes (from_dense records ``rank_choice``), but what lrkernels defines
    on them (factors, geometry, factor_names, ...) stays read-only."""
    for klass in type(self).__mro__:
        if klass.__module__ == _core.__name__ and name in vars(klass):
            raise AttributeError(f"{type(self).__name__}.{name} is read-only")
    object.__setattr__(self, name, value)


Layer.__setattr__ = _layer_setattr
for _cls in (LowRankLinear, Linear, Conv2d, TuckerConv2d, CPConv2d):
    _python_init(_cls)
del _cls

# Decompositions, rank selection and reports (numpy only). Importing `layer_specs` adds the
# `from_dense` classmethods to LowRankLinear, TuckerConv2d and CPConv2d (from its table).
from . import decompose, layer_specs, rank, report
from . import archive
from .embedding import Embedding, LowRankEmbedding
from .recurrent import GRU, LSTM, LowRankGRU, LowRankLSTM
from .archive import load_layers, read_archive, save_layers, write_archive

__all__ = [
    "Layer",
    "Conv2d",
    "CPConv2d",
    "Linear",
    "LowRankLinear",
    "TuckerConv2d",
    "LSTM",
    "GRU",
    "LowRankLSTM",
    "LowRankGRU",
    "Embedding",
    "LowRankEmbedding",
    "available_isas",
    "get_isa",
    "set_isa",
    "set_num_threads",
    "get_num_threads",
    "last_used_isa",
    "last_used_kernel",
    "cpu_features",
    "disabled_cpu_features",
    "set_disabled_cpu_features",
    "info",
    "reference",
    "__version__",
    # decomposition and rank selection
    "decompose",
    "layer_specs",
    "rank",
    "report",
    # saving and loading (numpy only, no pickle)
    "archive",
    "save_layers",
    "load_layers",
    "write_archive",
    "read_archive",
]


def info() -> dict:
    """Build and CPU facts: version, compiler, flags, ISAs compiled/supported/available, kernels."""
    return {
        "version": __version__,
        "compiler": _core.compiler(),
        "build_flags": _core.build_flags,
        "machine": _platform.machine(),
        "cpu": _core.cpu_name(),
        "isas_compiled": _core.compiled_isas(),
        "isas_supported_by_cpu": _core.cpu_isas(),
        "isas_available": available_isas(),
        "isa": get_isa(),
        "kernels": _core.kernel_names(),
        "cpu_features": cpu_features(),
        "disabled_cpu_features": disabled_cpu_features(),
        # per ISA: the GEMM family each precision uses now ("fp32", "fp16", "int8")
        "precision_kernels": _core.precision_kernels(),
        "num_threads": get_num_threads(),
        "default_num_threads": _core.default_num_threads(),
    }


def _apply_isa_from_environment() -> None:
    name = _os.environ.get("LRKERNELS_ISA", "").strip()
    if name:
        try:
            set_isa(name)
        except ValueError as exc:
            raise ValueError(f"LRKERNELS_ISA={name!r}: {exc}") from None


_apply_isa_from_environment()


def _apply_disabled_features_from_environment() -> None:
    value = _os.environ.get("LRKERNELS_DISABLE_FEATURES", "").strip()
    if value:
        try:
            set_disabled_cpu_features([v.strip() for v in value.split(",") if v.strip()])
        except ValueError as exc:
            raise ValueError(f"LRKERNELS_DISABLE_FEATURES={value!r}: {exc}") from None


_apply_disabled_features_from_environment()


def _apply_threads_from_environment() -> None:
    value = _os.environ.get("LRKERNELS_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"LRKERNELS_NUM_THREADS={value!r} is not an integer") from None
        try:
            set_num_threads(n)
        except ValueError as exc:
            raise ValueError(f"LRKERNELS_NUM_THREADS={value!r}: {exc}") from None


_apply_threads_from_environment()
