"""torch modules <-> lrkernels: factorizing nn.Linear / nn.Conv2d, folding BatchNorm.

``why_not_factorizable(module)`` says why a module stays dense (None when it can be factorized);
``factorize_linear`` / ``factorize_conv`` run the lrkernels ``from_dense`` of the target kind on the
module's weight (float64 numpy) and return the torch module; ``fold_batchnorm`` folds an eval-mode
BatchNorm that follows a factorized module into its last factor and bias.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import lrkernels

from .modules import CPConv2d, FactorizedModule, LowRankLinear, TuckerConv2d

__all__ = [
    "factorize_conv",
    "factorize_linear",
    "fold_batchnorm",
    "to_numpy",
    "why_not_factorizable",
]

_CRITERIA = ("rank", "energy", "ratio", "vbmf")


def to_numpy(t, dtype=np.float64):
    """A tensor or array-like as a numpy array (detached, on the CPU)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().to("cpu")
        t = t.to(torch.float64) if t.is_floating_point() else t
        return np.asarray(t.numpy(), dtype=dtype)
    return np.asarray(t, dtype=dtype)


def conv_padding(conv):
    """nn.Conv2d's padding as a symmetric (ph, pw) pair; ValueError for 'same' padding that is
    not symmetric (an even effective kernel)."""
    p = conv.padding
    if isinstance(p, str):
        if p == "valid":
            return (0, 0)
        pads = []
        for k, d, s in zip(conv.kernel_size, conv.dilation, conv.stride):
            total = d * (k - 1)
            if total % 2 or s != 1:
                raise ValueError("padding='same' with an even effective kernel is asymmetric")
            pads.append(total // 2)
        return tuple(pads)
    return tuple(p)


def why_not_factorizable(module):
    """None when ``module`` (nn.Linear or nn.Conv2d) can be factorized, else the reason."""
    if isinstance(module, FactorizedModule):
        return "already factorized"
    if isinstance(module, nn.Linear):
        if type(module) is not nn.Linear:
            # e.g. nn.MultiheadAttention's out_proj, whose weight its parent reads directly
            return f"{type(module).__name__} is not a plain nn.Linear"
        if min(module.in_features, module.out_features) < 2:
            return f"a {module.out_features}x{module.in_features} weight has no lower rank"
        return None
    if isinstance(module, nn.Conv2d):
        if type(module) is not nn.Conv2d:
            return f"{type(module).__name__} is not a plain nn.Conv2d"
        if module.groups != 1:
            return f"groups={module.groups} (grouped/depthwise convolutions are left dense)"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (only zero padding is fused)"
        try:
            conv_padding(module)
        except ValueError as e:
            return str(e)
        if min(module.in_channels, module.out_channels) < 2:
            return f"{module.in_channels} -> {module.out_channels} channels have no lower rank"
        return None
    return f"{type(module).__name__} is not nn.Linear or nn.Conv2d"


def _check_criterion(criterion, allowed=("calibration", "method")):
    names = _CRITERIA + (("ranks",) if "ranks" in allowed else ())
    given = [k for k in names if criterion.get(k) is not None and criterion.get(k) is not False]
    unknown = sorted(set(criterion) - set(_CRITERIA) - set(allowed))
    if unknown:
        raise TypeError(f"unexpected keyword(s) {unknown}; a criterion is one of {list(_CRITERIA)}")
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of rank=, energy=, ratio=, vbmf=True; got {given or 'none'}"
        )
    return {k: v for k, v in criterion.items() if v is not None}


def _calibration(calibration, ndim):
    if calibration is None:
        return None
    x = to_numpy(calibration)
    if ndim == 2 and x.ndim > 2:
        x = x.reshape(-1, x.shape[-1])
    return x


def factorize_linear(linear, *, layer_class=LowRankLinear, **criterion):
    """The LowRankLinear (``layer_class``) of an nn.Linear by one criterion (see
    ``lrkernels.LowRankLinear.from_dense``), on the module's device and dtype."""
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
    reason = why_not_factorizable(linear)
    if reason:
        raise ValueError(f"cannot factorize this nn.Linear: {reason}")
    criterion = _check_criterion(criterion, allowed=("calibration",))
    criterion["calibration"] = _calibration(criterion.get("calibration"), 2)
    bias = None if linear.bias is None else to_numpy(linear.bias)
    layer = lrkernels.LowRankLinear.from_dense(to_numpy(linear.weight), bias, **criterion)
    module = layer_class.from_layer(layer)
    return module.to(linear.weight.device, linear.weight.dtype)


def factorize_conv(conv, *, layer_class=TuckerConv2d, **criterion):
    """The TuckerConv2d or CPConv2d (``layer_class``) of an nn.Conv2d by one criterion (see the
    lrkernels class's ``from_dense``), with its stride, padding, dilation and bias."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"from_conv needs an nn.Conv2d, got {type(conv).__name__}")
    reason = why_not_factorizable(conv)
    if reason:
        raise ValueError(f"cannot factorize this nn.Conv2d: {reason}")
    if layer_class not in (TuckerConv2d, CPConv2d) and not issubclass(
        layer_class, (TuckerConv2d, CPConv2d)
    ):
        raise TypeError(f"layer_class must be TuckerConv2d or CPConv2d, got {layer_class!r}")
    tucker = issubclass(layer_class, TuckerConv2d)
    allowed = ("calibration", "method", "ranks") if tucker else ("calibration",)
    allowed += ("max_seconds", "n_iter_max", "tol", "seed", "progress")
    criterion = _check_criterion(criterion, allowed=allowed)
    criterion["calibration"] = _calibration(criterion.get("calibration"), 4)
    geometry = dict(
        stride=tuple(conv.stride), padding=conv_padding(conv), dilation=tuple(conv.dilation)
    )
    bias = None if conv.bias is None else to_numpy(conv.bias)
    lrk_class = getattr(lrkernels, layer_class.kind)
    layer = lrk_class.from_dense(
        to_numpy(conv.weight), bias, layout="NCHW", **geometry, **criterion
    )
    module = layer_class.from_layer(layer)
    return module.to(conv.weight.device, conv.weight.dtype)


def batchnorm_affine(bn):
    """(scale, shift) of an eval-mode BatchNorm: bn(y) = y * scale + shift, per channel."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"expected a BatchNorm module, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics cannot be folded")
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
    return scale, shift


def fold_batchnorm(module, bn):
    """Fold ``bn`` (its running statistics, as in eval mode) into ``module``'s output side: the
    last factor (U for LowRankLinear) is scaled per output channel and the bias shifted (a bias
    is added if the module had none). In place; returns ``module``."""
    if not isinstance(module, FactorizedModule):
        raise TypeError(
            f"fold_batchnorm needs an lrkernels.torch module, got {type(module).__name__}"
        )
    out = getattr(module, "out_features", None) or module.out_channels
    if bn.num_features != out:
        raise ValueError(f"BatchNorm has {bn.num_features} features, the module {out} outputs")
    scale, shift = batchnorm_affine(bn)
    last = getattr(module, module.output_factor)
    with torch.no_grad():
        bias = module.bias.double() if module.bias is not None else torch.zeros_like(scale)
        rows = scale.reshape(-1, *([1] * (last.ndim - 1)))
        last.copy_((last.double() * rows).to(last.dtype))
        new_bias = (bias * scale + shift).to(last.dtype)
        if module.bias is None:
            module.bias = nn.Parameter(new_bias.to(last.device))
        else:
            module.bias.copy_(new_bias)
    module.refresh()
    return module
