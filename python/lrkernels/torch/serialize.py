"""``save(model, path)`` / ``load(model, path)`` without pickle.

The file is an lrkernels archive (``lrkernels.save_layers``): every factorized module as a plain
lrkernels layer description plus its float32 factors, the rest of the model's state_dict under
``state/<key>``, and in the metadata the module classes, how their ranks were chosen and the
fusions (BatchNorm folding, fused activations) to replay. ``lrkernels.load_layers(path)`` reads
the same file without torch.

LowRankLSTM / LowRankGRU are stored as their lrkernels layers, one per layer and direction, named
``<module>.l<k>`` and ``<module>.l<k>_reverse`` (torch's parameter suffixes), LowRankEmbedding as
one ``lrkernels.LowRankEmbedding`` under its own name; their module settings (num_layers,
bidirectional, batch_first, dropout) are in the metadata (``sequence_modules``). ``load`` rebuilds
them in place of the model's nn.LSTM / nn.GRU / nn.Embedding; ``lrkernels.load_layers`` (no
torch) lists the layers, ready to run on a board.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import lrkernels

from .compress import set_submodule
from .embedding import LowRankEmbedding
from .modules import FactorizedModule, module_for_kind
from .recurrent import LowRankGRU, LowRankLSTM

__all__ = ["load", "save"]

_FORMAT = "lrkernels.torch"
_STATE = "state/"


def _factorized(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, FactorizedModule)}


_SEQUENCE_CLASSES = {c.__name__: c for c in (LowRankLSTM, LowRankGRU, LowRankEmbedding)}


def _sequence_config(m):
    """The constructor keywords of a LowRankLSTM / LowRankGRU / LowRankEmbedding (JSON-able)."""
    if isinstance(m, LowRankEmbedding):
        keys = ("num_embeddings", "embedding_dim", "rank", "padding_idx")
        return {k: getattr(m, k) for k in keys}
    keys = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout")
    config = {k: getattr(m, k) for k in keys}
    config["bidirectional"] = m.bidirectional
    config["rank"] = [list(r) for r in m.ranks]
    return config


def _sequence_layer_names(name, m):
    """The archive names of a sequence module's lrkernels layers."""
    if isinstance(m, LowRankEmbedding):
        return [name]
    return [
        f"{name}.l{k}{'_reverse' if d else ''}"
        for k in range(m.num_layers)
        for d in range(2 if m.bidirectional else 1)
    ]


def _build_sequence(path, name, entry, layers):
    """The module of a ``sequence_modules`` entry, from its lrkernels layers (factors copied)."""
    names = entry.get("layers")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: {name!r} has no list of layers")
    missing = [n for n in names if n not in layers]
    if missing:
        raise ValueError(f"{path}: {name!r}: layers {missing} are not in the file")
    module = _configured_sequence(path, name, entry)
    parts = [layers[n] for n in names]
    try:
        if isinstance(module, LowRankEmbedding):
            built = LowRankEmbedding.from_layer(parts[0])
        else:
            built = type(module).from_layers(
                parts,
                bidirectional=module.bidirectional,
                batch_first=module.batch_first,
                dropout=module.dropout,
            )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {name!r}: {e}") from None
    if _sequence_geometry(built) != _sequence_geometry(module):
        raise ValueError(
            f"{path}: {name!r}: its layers give {_sequence_geometry(built)}, the settings "
            f"{_sequence_geometry(module)}"
        )
    return built


def _configured_sequence(path, name, entry):
    cls = _SEQUENCE_CLASSES.get(entry.get("class"))
    config = dict(entry.get("config") or {})
    if cls is None:
        raise ValueError(f"{path}: {name!r} has an unknown module class {entry.get('class')!r}")
    try:
        if cls is LowRankEmbedding:
            return cls(**config)
        config["rank"] = [tuple(r) for r in config["rank"]]
        return cls(**config)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: {name!r}: bad {cls.__name__} configuration: {e}") from None


def _sequence_geometry(m):
    if isinstance(m, (nn.Embedding, LowRankEmbedding)):
        return ("embedding", m.num_embeddings, m.embedding_dim)
    mode = "LSTM" if isinstance(m, (nn.LSTM, LowRankLSTM)) else "GRU"
    return (mode, m.input_size, m.hidden_size, m.num_layers, bool(m.bidirectional))


def _check_sequence_replaces(path, name, target, module):
    kinds = (nn.LSTM, nn.GRU, nn.Embedding, LowRankLSTM, LowRankGRU, LowRankEmbedding)
    _check_replaces(path, name, target, module, kinds, _sequence_geometry)


def save(model, path):
    """Write ``model``'s factorized modules (as lrkernels layers, float32) and the rest of its
    state_dict to ``path`` (an uncompressed .npz archive: no pickle). Returns ``path``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"save needs an nn.Module, got {type(model).__name__}")
    modules = _factorized(model)
    layers = {name: m.to_layer("NCHW") for name, m in modules.items()}
    sequence = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, tuple(_SEQUENCE_CLASSES.values()))
    }
    sequence_layers = {}
    for name, m in sequence.items():
        sequence_layers[name] = _sequence_layer_names(name, m)
        parts = [m.to_layer()] if isinstance(m, LowRankEmbedding) else m.to_layers()
        layers.update(zip(sequence_layers[name], parts))
    prefixes = tuple(f"{name}." for name in list(modules) + list(sequence))
    state, dtypes = {}, {}
    for key, t in model.state_dict().items():
        if key.startswith(prefixes):
            continue
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: stored as float32, restored
            dtypes[key] = "bfloat16"
            t = t.float()
        state[_STATE + key] = t.numpy()
    metadata = {
        "format": _FORMAT,
        "version": 1,
        "model_class": type(model).__name__,
        "modules": {
            name: {
                "class": type(m).__name__,
                "rank_choice": None if m.rank_choice is None else str(m.rank_choice),
            }
            for name, m in modules.items()
        },
        "fusions": list(getattr(model, "lrk_fusions", [])),
        "state_dtypes": dtypes,
        "sequence_modules": {
            name: {
                "class": next(n for n, c in _SEQUENCE_CLASSES.items() if isinstance(m, c)),
                "config": _sequence_config(m),
                "layers": sequence_layers[name],
                "rank_choice": None if m.rank_choice is None else str(m.rank_choice),
            }
            for name, m in sequence.items()
        },
    }
    lrkernels.save_layers(layers, path, metadata=metadata, extra_arrays=state)
    return path


def _geometry(m):
    if isinstance(m, (nn.Linear, FactorizedModule)) and not getattr(m, "is_conv", False):
        return ("linear", m.in_features, m.out_features)
    pad = m.padding
    if isinstance(pad, str):
        from .convert import conv_padding

        try:
            pad = conv_padding(m)
        except ValueError:
            pass  # an asymmetric "same": matches no lrkernels layer
    return (
        "conv",
        m.in_channels,
        m.out_channels,
        tuple(m.kernel_size),
        tuple(m.stride),
        tuple(pad),
        tuple(m.dilation),
    )


def _check_replaces(path, name, target, module, kinds=None, geometry=None):
    """ValueError unless ``module`` (from the file) can stand in for the model's ``target``: one
    of ``kinds`` with the same ``geometry`` (default: a Linear for a linear layer, a convolution
    of the same channels and geometry for a conv)."""
    kinds = kinds or (nn.Linear, nn.Conv2d, FactorizedModule)
    geometry = geometry or _geometry
    if not isinstance(target, kinds):
        raise ValueError(
            f"{path}: {name!r} is a {type(target).__name__} in the model, the file has a "
            f"{type(module).__name__}"
        )
    if geometry(target) != geometry(module):
        raise ValueError(
            f"{path}: {name!r} does not match: the model has {type(target).__name__} "
            f"{geometry(target)}, the file {type(module).__name__} {geometry(module)}"
        )


def load(model, path, *, strict=True):
    """Rebuild, inside ``model`` (a freshly built architecture, e.g. the dense one), the
    factorized modules saved in ``path``, replay the recorded fusions and load the rest of the
    state. Returns the model (a torch.fx GraphModule when fusions were replayed, else ``model``
    itself). strict: every non-factorized parameter and buffer must be in the file and vice
    versa (ValueError naming them otherwise)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"load needs an nn.Module, got {type(model).__name__}")
    header, arrays = lrkernels.read_archive(path)
    metadata = header.get("metadata") or {}
    if metadata.get("format") != _FORMAT:
        raise ValueError(f"{path}: not an lrkernels.torch model file (no '{_FORMAT}' metadata)")
    layers = lrkernels.load_layers(path)
    sequence_entries = metadata.get("sequence_modules") or {}
    if not isinstance(sequence_entries, dict):
        raise ValueError(f"{path}: metadata 'sequence_modules' is not a dict")
    in_sequences = {
        n for e in sequence_entries.values() if isinstance(e, dict) for n in e.get("layers") or []
    }
    modules = {}
    for name, layer in layers.items():  # every check before the model is touched
        if name in in_sequences:
            continue
        try:
            target = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{path}: the model has no submodule {name!r} to replace") from None
        module = module_for_kind(layer.kind).from_layer(layer)
        _check_replaces(path, name, target, module)
        ref = next(iter(target.parameters()), None)
        if ref is not None:
            module = module.to(ref.device, ref.dtype)
        modules[name] = module
    for name, entry in sequence_entries.items():
        try:
            target = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{path}: the model has no submodule {name!r} to replace") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: {name!r}: bad sequence module entry")
        module = _build_sequence(path, name, entry, layers)
        _check_sequence_replaces(path, name, target, module)
        ref = next(iter(target.parameters()), None)
        if ref is not None:
            module = module.to(ref.device, ref.dtype)
        modules[name] = module
    for name, module in modules.items():
        set_submodule(model, name, module)
    fusions = metadata.get("fusions") or []
    if fusions:
        from .fuse import fuse

        model = fuse(model, inplace=True, only={f["module"]: f for f in fusions}, fold=False)
    dtypes = metadata.get("state_dtypes", {})
    saved = {}
    for key, a in arrays.items():
        if key.startswith(_STATE):
            k = key[len(_STATE) :]
            t = torch.from_numpy(np.array(a))
            if dtypes.get(k) == "bfloat16":
                t = t.to(torch.bfloat16)
            saved[k] = t
    own = model.state_dict()
    replaced = [n for n in layers if n not in in_sequences] + list(sequence_entries)
    prefixes = tuple(f"{name}." for name in replaced)
    expected = {k for k in own if not k.startswith(prefixes)}
    missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - set(own))
    if strict and (missing or unexpected):
        raise ValueError(
            f"{path} does not match the model: missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    own.update({k: v for k, v in saved.items() if k in own})
    model.load_state_dict(own)
    return model
