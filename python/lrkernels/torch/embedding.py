"""``LowRankEmbedding``: an embedding table stored as two factors, table ~ A @ B.

Parameters ``A`` (num_embeddings, rank) and ``B`` (rank, embedding_dim); ``forward(indices)`` is
``A[indices] @ B`` (``F.embedding`` then a matmul in torch ops, for autograd and other devices or
dtypes; ``lrkernels.LowRankEmbedding`` in inference on CPU float32 parameters). ``padding_idx``
has torch's meaning: that output row is zero and gets no gradient.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lrkernels

from ._kernel_cache import KernelModule, plain_cpu

__all__ = ["LowRankEmbedding"]

_INDEX_DTYPES = (torch.int64, torch.int32)


class LowRankEmbedding(KernelModule):
    """nn.Embedding whose table is A @ B (see the module docstring).

    ``LowRankEmbedding(num_embeddings, embedding_dim, rank, padding_idx=None)`` initializes so
    that A @ B has nn.Embedding's N(0, 1) entries; ``from_factors(A, B, padding_idx=None)``;
    ``from_embedding(nn.Embedding, rank= | energy= | ratio= | vbmf=True, calibration=None)``
    (calibration: index tensors, used as row frequencies); ``to_layer()``. Out-of-range or
    negative indices raise IndexError, as nn.Embedding's.
    """

    def __init__(self, num_embeddings, embedding_dim, rank, padding_idx=None):
        super().__init__()
        for name, v in (
            ("num_embeddings", num_embeddings),
            ("embedding_dim", embedding_dim),
            ("rank", rank),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if padding_idx is not None:
            if not isinstance(padding_idx, int) or isinstance(padding_idx, bool):
                raise TypeError(f"padding_idx must be an int or None, got {padding_idx!r}")
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"padding_idx must be within [-{num_embeddings}, {num_embeddings}), "
                    f"got {padding_idx}"
                )
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.padding_idx = padding_idx
        self.A = nn.Parameter(torch.empty(num_embeddings, rank))
        self.B = nn.Parameter(torch.empty(rank, embedding_dim))
        self._param_names = ("A", "B")
        self.reset_parameters()

    def reset_parameters(self):
        with torch.no_grad():
            self.A.normal_()
            self.B.normal_(0.0, 1.0 / math.sqrt(self.rank))
            if self.padding_idx is not None:
                self.A[self.padding_idx].zero_()

    @classmethod
    def from_factors(cls, A, B, *, padding_idx=None):
        A, B = torch.as_tensor(A), torch.as_tensor(B)
        if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
            raise ValueError(
                "LowRankEmbedding needs A (num_embeddings, rank) and B (rank, embedding_dim), "
                f"got {tuple(A.shape)} and {tuple(B.shape)}"
            )
        m = cls(A.shape[0], B.shape[1], A.shape[1], padding_idx=padding_idx)
        with torch.no_grad():
            m.A.copy_(A)
            m.B.copy_(B)
            if m.padding_idx is not None:
                m.A[m.padding_idx].zero_()
        return m

    @classmethod
    def from_embedding(cls, embedding, **criterion):
        """Factorize an nn.Embedding's table (see ``convert.factorize_embedding``); refuses
        max_norm, sparse=True and scale_grad_by_freq modules (``why_not_factorizable``)."""
        from .convert import factorize_embedding

        return factorize_embedding(embedding, layer_class=cls, **criterion)

    @classmethod
    def from_layer(cls, layer, *, rank_choice=None):
        """The module of an ``lrkernels.LowRankEmbedding`` (factors copied)."""
        m = cls.from_factors(
            torch.from_numpy(np.array(layer.A, np.float32)),
            torch.from_numpy(np.array(layer.B, np.float32)),
            padding_idx=layer.padding_idx,
        )
        m.rank_choice = rank_choice
        return m

    def to_layer(self):
        """The ``lrkernels.LowRankEmbedding`` of the current factors (float32)."""
        A, B = (t.detach().to("cpu", torch.float32).numpy() for t in (self.A, self.B))
        return lrkernels.LowRankEmbedding(A, B, padding_idx=self.padding_idx)

    def _build_kernels(self):
        return self.to_layer() if hasattr(lrkernels, "LowRankEmbedding") else None

    def dense_table(self):
        """A @ B (the padding row zero), a tensor."""
        table = self.A @ self.B
        if self.padding_idx is not None:
            table = table.index_fill(0, torch.tensor([self.padding_idx]), 0.0)
        return table

    def forward(self, indices):
        if not isinstance(indices, torch.Tensor):
            raise TypeError(f"LowRankEmbedding needs a tensor of indices, got {type(indices)}")
        if indices.dtype in (torch.int16, torch.int8, torch.uint8):
            indices = indices.long()  # F.embedding takes int32/int64 only
        if indices.dtype not in _INDEX_DTYPES:
            raise TypeError(
                f"LowRankEmbedding indices must be an integer tensor (int64/int32), got "
                f"{indices.dtype}"
            )
        if indices.numel() and (
            int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings
        ):
            raise IndexError(
                f"LowRankEmbedding indices must be in [0, {self.num_embeddings}), got values in "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        if plain_cpu(indices, _INDEX_DTYPES):
            layer = self._kernels_for_call()
            if layer is not None:
                return torch.from_numpy(layer(indices.numpy()))
        y = F.embedding(indices, self.A, self.padding_idx) @ self.B
        if self.padding_idx is not None:
            y = y.masked_fill((indices == self.padding_idx).unsqueeze(-1), 0.0)
        return y

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s
