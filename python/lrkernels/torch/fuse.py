"""``fuse(model)``: conv/linear -> BatchNorm -> ReLU blocks of factorized layers as one kernel call.

The model is traced with torch.fx (factorized modules are leaves). For every factorized module
called once whose output feeds only an eval-mode BatchNorm, the BatchNorm is folded into the
module's last factor and bias; a ReLU / ReLU6 / Hardtanh (module or function) that is then the
only consumer becomes the module's fused activation (the kernels' clamped output store). Both
nodes leave the graph. Returns the torch.fx GraphModule; ``model.lrk_fusions`` lists what was
fused (``lrkernels.torch.save`` records it, ``load`` replays it).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn

from ._kernel_cache import KernelModule
from .compress import set_submodule
from .convert import fold_batchnorm
from .modules import Conv2d, FactorizedModule, Linear, canonical_activation, check_precision

__all__ = ["fuse"]


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (FactorizedModule, KernelModule)) or super().is_leaf_module(
            m, qualname
        )


def trace(model):
    """torch.fx GraphModule of ``model`` with factorized modules as leaves."""
    if isinstance(model, fx.GraphModule):
        return model
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError on control flow, ...)
        raise ValueError(
            f"fuse: torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: {e}); fold "
            "BatchNorms by hand with lrkernels.torch.fold_batchnorm and set module.activation"
        ) from e
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)


def _activation_of(gm, node):
    """The activation (None/"relu"/"relu6"/(lo, hi)) a node computes, or False if it is not one."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if type(m) is nn.ReLU:
            return "relu"
        if type(m) is nn.ReLU6:
            return "relu6"
        if type(m) is nn.Hardtanh:
            return (float(m.min_val), float(m.max_val))
        return False
    if node.op == "call_function" and len(node.args) == 1:
        if node.target in (F.relu, torch.relu):
            return "relu"
        if node.target is F.relu6:
            return "relu6"
        if node.target is F.hardtanh and not node.kwargs:
            return (-1.0, 1.0)
    return False


def _foldable(module, bn):
    """Whether ``bn`` after ``module`` normalizes the module's output channels with running
    statistics: a BatchNorm2d after a convolution. Not a BatchNorm1d after a linear layer: on 3-D
    input (N, L, F) it normalizes L, not the features, and the graph does not say which."""
    if not isinstance(bn, nn.BatchNorm2d) or not getattr(module, "is_conv", False):
        return False
    if bn.running_mean is None or bn.running_var is None:
        return False  # normalizes with batch statistics even in eval mode
    return bn.num_features == module.out_channels


def _only_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def to_channels_last(x):
    """A 4-D tensor in channels_last memory format (the same values; one copy unless it already
    is), anything else unchanged: inserted by ``fuse(channels_last=True)`` at the model's inputs."""
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def fuse(
    model,
    *,
    dense=True,
    channels_last=False,
    inplace=False,
    only=None,
    fold=True,
    precision="fp32",
):
    """Fold BatchNorms into the convolutions before them and fuse the activations that follow
    (BatchNorm1d after a linear layer is left: whether it normalizes the features depends on the
    input's rank, which the graph does not know; use ``fold_batchnorm`` by hand); returns
    an eval-mode torch.fx GraphModule (``.lrk_fusions``: the list of ``{"module", "batchnorm",
    "activation", "dense"}`` fused). For inference: the folded BatchNorm's running statistics are
    baked in.

    dense: also move the model's plain nn.Conv2d (groups=1, zero padding) and nn.Linear layers
      onto lrkernels' dense ``Conv2d`` / ``Linear`` (a ResNet's stem and 1x1 downsamples, its
      classifier), so that their BatchNorm and ReLU fuse too; False leaves them in torch.
    precision: "fp32" (default), "fp16" or "int8": the fused inference kernel precision of the
      dense layers ``dense=True`` moves onto lrkernels (the factorized modules already in the
      model keep their own ``precision``).
    channels_last: convert 4-D inputs to channels_last memory format once, at the model's
      entry: every lrkernels convolution then runs NHWC without transposes, and torch's own ops
      (pooling, adds) follow the format. The values and shapes are unchanged; 4-D outputs come
      back channels_last, on which ``.view`` may fail where ``.reshape`` works. Off by default.
    inplace: fold into ``model``'s own modules (default: a deep copy). ``only``/``fold`` are for
    ``load``: replay recorded fusions whose BatchNorms are already folded into the factors.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse needs an nn.Module, got {type(model).__name__}")
    check_precision(precision)
    if not inplace:
        model = copy.deepcopy(model)
    done = list(getattr(model, "lrk_fusions", []))
    gm = trace(model)
    gm.eval()
    calls = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1:
            continue
        module = gm.get_submodule(node.target)
        converted = False
        if dense and only is None and type(module) in (nn.Conv2d, nn.Linear):
            try:
                if isinstance(module, nn.Conv2d):
                    module = Conv2d.from_conv(module, precision=precision)
                else:
                    module = Linear.from_linear(module, precision=precision)
            except ValueError:
                continue  # grouped, padded otherwise, ...: stays in torch
            set_submodule(gm, node.target, module.eval())
            converted = True
        if not isinstance(module, FactorizedModule):
            continue
        if only is not None and node.target not in only:
            continue
        record = {"module": node.target, "batchnorm": None, "activation": None, "dense": converted}
        bn_node = _only_user(node)
        if bn_node is not None and bn_node.op == "call_module" and calls.get(bn_node.target) == 1:
            bn = gm.get_submodule(bn_node.target)
            if _foldable(module, bn) and (only is None or only[node.target]["batchnorm"]):
                if fold:
                    fold_batchnorm(module, bn)
                bn_node.replace_all_uses_with(node)
                gm.graph.erase_node(bn_node)
                record["batchnorm"] = bn_node.target
        act_node = _only_user(node)
        if only is None:
            wanted = module.activation is None
        else:
            wanted = only[node.target]["activation"] is not None
        act = _activation_of(gm, act_node) if (act_node is not None and wanted) else False
        if act is not False:
            if fold:
                module.activation = canonical_activation(act)
            module.refresh()
            act_node.replace_all_uses_with(node)
            gm.graph.erase_node(act_node)
            record["activation"] = act if isinstance(act, str) else list(act)
        if record["batchnorm"] or record["activation"] is not None or converted:
            done.append(record)
    # replaying: the saved record of channels_last has the empty module name
    if (channels_last and only is None) or (only is not None and "" in only):
        for node in list(gm.graph.nodes):
            if node.op == "placeholder":
                with gm.graph.inserting_after(node):
                    conv = gm.graph.call_function(to_channels_last, (node,))
                node.replace_all_uses_with(conv, delete_user_cb=lambda user: user is not conv)
        if only is None:
            done.append({"module": "", "batchnorm": None, "activation": None, "dense": False})
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    gm.lrk_fusions = done
    return gm
