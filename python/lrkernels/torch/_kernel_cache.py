"""The fused-kernel cache of the lrkernels.torch modules made of several kernel layers (recurrent
layers: one lrkernels layer per layer and direction) or taking non-float input (embeddings).

Same rules as ``FactorizedModule``: the packed lrkernels layers are built from the current
parameters on the first inference call and rebuilt when a parameter's version counter or storage
changes or an optimizer stepped anywhere; torch ops run whenever autograd, a tracer/compiler, a
non-CPU or non-float32 tensor is involved. Only in-place writes through ``param.data`` go unseen:
call ``module.refresh()`` after them.

``precision`` is "fp32" only: the lrkernels recurrent and embedding layers have no fp16/int8
kernels, so setting another value raises ValueError (as ``CPConv2d``'s does).
"""

from __future__ import annotations

import torch
from torch import nn

from .modules import _OPTIMIZER_STEPS, check_precision

__all__ = ["KernelModule"]

_Tensor = torch.Tensor
_F32 = torch.float32
_VERSION = torch.Tensor._version.__get__
_DATA_PTR = torch.Tensor.data_ptr
_grad_enabled = torch.is_grad_enabled
_tracing_state = torch._C._get_tracing_state
_is_compiling = torch.compiler.is_compiling


def plain_cpu(t, dtypes=(_F32,)):
    """True for a plain (not a subclass) CPU tensor of one of ``dtypes`` not requiring grad."""
    return type(t) is _Tensor and t.dtype in dtypes and t.is_cpu and not t.requires_grad


class KernelModule(nn.Module):
    """Base: the parameters named in ``self._param_names`` make the lrkernels layers returned by
    ``self._build_kernels()``; ``self._kernels_for_call()`` gives them (cached) or None when
    torch ops must run. ``use_kernels`` (default True): False always runs torch ops.
    ``precision``: "fp32" (the only precision of these lrkernels layers; others: ValueError)."""

    precision = "fp32"
    precisions = ("fp32",)

    def __init__(self):
        super().__init__()
        self.use_kernels = True
        self.rank_choice = None  # how the ranks were found (from_lstm / from_embedding), if known
        self._param_names = ()
        self.refresh()

    def __setattr__(self, name, value):
        if name == "precision":
            value = check_precision(value, self.precisions, type(self).__name__)
        super().__setattr__(name, value)
        if isinstance(value, nn.Parameter) or name in self.__dict__.get("_param_names", ()):
            self.refresh()  # a new parameter object: the packed layers are stale

    def refresh(self):
        """Drop the packed kernel layers: the next inference call repacks the parameters."""
        self.__dict__["_kernels"] = None

    def train(self, mode=True):
        self.refresh()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        result = super()._apply(fn, *args, **kwargs)  # .to() may swap storages silently
        self.refresh()
        return result

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_kernels"] = None  # a cache, and not picklable
        return state

    def _build_kernels(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _kernels_for_call(self):
        """The cached lrkernels layers for an inference call (the caller checked its inputs with
        ``plain_cpu``), or None: kernels off, autograd, tracing/compiling, a parameter not a plain
        one (a parametrization owns it), parameters not CPU float32, or no such lrkernels layer
        in this build."""
        if not self.use_kernels:
            return None
        params = self._parameters
        try:
            ps = tuple(map(params.__getitem__, self._param_names))
        except KeyError:
            return None
        if any(p is None for p in ps):
            return None
        if _grad_enabled() and any(p.requires_grad for p in ps):
            return None
        if _tracing_state() is not None or _is_compiling():
            return None
        key = (_OPTIMIZER_STEPS[0], sum(map(_VERSION, ps)), *map(_DATA_PTR, ps))
        entry = self._kernels
        if entry is None or entry[0] != key:
            usable = all(p.is_cpu and p.dtype is _F32 for p in ps)
            entry = (key, self._build_kernels() if usable else None)
            self.__dict__["_kernels"] = entry
        return entry[1]
