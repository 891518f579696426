"""lrkernels for PyTorch models: factorized modules that train with autograd and infer on the
fused kernels, whole-model compression, rank choice by validation, and safe save/load.

Needs PyTorch (``pip install "lrkernels[torch]"``); ``import lrkernels`` itself does not.

Modules (parameters = the factors; ``from_linear`` / ``from_conv`` / ``from_factors``)
    LowRankLinear, TuckerConv2d, CPConv2d; and the dense Linear, Conv2d on the same engine
    LowRankLSTM, LowRankGRU (``from_lstm`` / ``from_gru``): nn.LSTM / nn.GRU with factorized
                       weight matrices, one lrkernels recurrent layer per layer and direction
    LowRankEmbedding (``from_embedding``): an embedding table as A @ B
Whole models
    compress(model, *, rank= | energy= | ratio= | vbmf=True | budget= | latency_target=, ...)
        -> (compressed model, CompressionReport); precision="fp16" | "int8" runs the
        factorized layers' fused inference kernels at that precision (training stays float32)
    fuse(model)        fold BatchNorm into the factorized layer before it and fuse a following
                       ReLU / ReLU6 / Hardtanh into its kernel (for inference)
    sweep(model, levels, evaluate, finetune=None, folds=None, ...) -> SweepResult
    distill(student, teacher, batches, *, epochs=1, lr=1e-4, loss="mse" | "kl" | "cosine")
                       fine-tune a compressed model on the dense model's outputs (no labels)
    save(model, path) / load(model, path)   no pickle; ``lrkernels.load_layers(path)`` reads the
                       same file without torch
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "lrkernels.torch needs PyTorch, which is not installed: pip install 'lrkernels[torch]' "
        "(the rest of lrkernels needs numpy only)"
    ) from e

from .compress import CompressionReport, LayerReport, compress
from .convert import fold_batchnorm, why_not_factorizable
from .distill import DistillResult, distill
from .embedding import LowRankEmbedding
from .fuse import fuse
from .modules import Conv2d, CPConv2d, FactorizedModule, Linear, LowRankLinear, TuckerConv2d
from .recurrent import LowRankGRU, LowRankLSTM
from .serialize import load, save
from .sweep import SweepResult, sweep

__all__ = [
    "CPConv2d",
    "Conv2d",
    "Linear",
    "CompressionReport",
    "DistillResult",
    "FactorizedModule",
    "LayerReport",
    "LowRankEmbedding",
    "LowRankGRU",
    "LowRankLinear",
    "LowRankLSTM",
    "SweepResult",
    "TuckerConv2d",
    "compress",
    "distill",
    "fold_batchnorm",
    "fuse",
    "load",
    "save",
    "sweep",
    "why_not_factorizable",
]
