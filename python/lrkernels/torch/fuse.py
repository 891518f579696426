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

from .convert import fold_batchnorm
from .modules import FactorizedModule, canonical_activation

__all__ = ["fuse"]


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, FactorizedModule) or super().is_leaf_module(m, qualname)


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


def _only_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def fuse(model, *, inplace=False, only=None, fold=True):
    """Fold BatchNorms into the factorized layers before them and fuse the activations that
    follow; returns an eval-mode torch.fx GraphModule (``.lrk_fusions``: the list of
    ``{"module", "batchnorm", "activation"}`` fused). For inference: the folded BatchNorm's
    running statistics are baked in.

    inplace: fold into ``model``'s own modules (default: a deep copy). ``only``/``fold`` are for
    ``load``: replay recorded fusions whose BatchNorms are already folded into the factors.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse needs an nn.Module, got {type(model).__name__}")
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
        if not isinstance(module, FactorizedModule):
            continue
        if only is not None and node.target not in only:
            continue
        record = {"module": node.target, "batchnorm": None, "activation": None}
        bn_node = _only_user(node)
        if bn_node is not None and bn_node.op == "call_module" and calls.get(bn_node.target) == 1:
            bn = gm.get_submodule(bn_node.target)
            if isinstance(bn, nn.modules.batchnorm._BatchNorm) and (
                only is None or only[node.target]["batchnorm"]
            ):
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
        if record["batchnorm"] or record["activation"] is not None:
            done.append(record)
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    gm.lrk_fusions = done
    return gm
