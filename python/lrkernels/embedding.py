"""Embedding tables on the fused kernels: dense, or factorized as E = A B.

``LowRankEmbedding(A, B)`` stores A (num_embeddings, rank) and B (rank, embedding_dim): a lookup
gathers the rows of A and multiplies them by B in the same call (one GEMM), so the table costs
rank * (num_embeddings + embedding_dim) floats instead of num_embeddings * embedding_dim.
``Embedding(table)`` is the dense table on the same engine (a row copy per index).

``layer(indices)`` takes integer indices of any shape (int32/int64, or anything numpy converts to
an integer array without loss) and returns float32 ``indices.shape + (embedding_dim,)``. Negative,
out-of-range or non-integer indices raise ValueError/TypeError before any row is read. Rows at
``padding_idx`` come out exactly zero (torch's padding row: zero, and never trained).
"""

from __future__ import annotations

import numpy as np

from . import _core
from .recurrent import _float_matrix

__all__ = ["Embedding", "LowRankEmbedding"]


def _padding(padding_idx, num):
    if padding_idx is None:
        return -1
    if isinstance(padding_idx, (bool, np.bool_)) or not isinstance(padding_idx, (int, np.integer)):
        raise TypeError(f"padding_idx must be an int or None, got {padding_idx!r}")
    p = int(padding_idx)
    if not -num <= p < num:
        raise ValueError(f"padding_idx={p} is out of range for num_embeddings={num}")
    return p % num  # torch's convention: a negative padding_idx counts from the end


def _indices(indices):
    idx = np.asarray(indices)
    if idx.dtype.kind == "b" or idx.dtype.kind not in "iu":
        if (
            idx.dtype.kind == "f"
            and idx.size
            and np.all(np.isfinite(idx))
            and np.all(idx == np.round(idx))
        ):
            raise TypeError(
                f"indices must have an integer dtype, got {idx.dtype} (with whole values: "
                "pass indices.astype(np.int64))"
            )
        if idx.dtype.kind != "f" or idx.size:
            raise TypeError(f"indices must have an integer dtype, got {idx.dtype}")
        idx = idx.astype(np.int64)  # an empty float array (np.array([])) looks up nothing
    if idx.dtype == np.uint64 and idx.size and idx.max() > np.iinfo(np.int64).max:
        raise ValueError(f"index {int(idx.max())} is out of range")
    if not (idx.dtype.kind == "i" and idx.dtype.itemsize in (4, 8) and idx.dtype.isnative):
        idx = idx.astype(np.int64)
    return idx if idx.flags.c_contiguous else idx.copy()  # (ascontiguousarray makes 0-d 1-d)


class _EmbeddingBase:
    def _lookup(self, indices):
        idx = _indices(indices)
        out = self._core.lookup(idx.reshape(-1))
        return out.reshape(idx.shape + (self.embedding_dim,))

    def __call__(self, indices):
        """float32 rows of shape indices.shape + (embedding_dim,)."""
        return self._lookup(indices)

    @property
    def num_embeddings(self) -> int:
        return self._core.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self._core.embedding_dim

    @property
    def padding_idx(self):
        p = self._core.padding_idx
        return None if p < 0 else p


class Embedding(_EmbeddingBase):
    """Dense embedding table on the lrkernels engine (the baseline of LowRankEmbedding).

    Embedding(table, *, padding_idx=None): table (num_embeddings, embedding_dim).
    """

    def __init__(self, table, *, padding_idx=None):
        t = _float_matrix(table, "table")
        self._core = _core._EmbeddingCore(t, _padding(padding_idx, t.shape[0]))

    @property
    def table(self):
        return self._core.factors

    def dense_table(self):
        return np.array(self.table)

    def num_params(self) -> int:
        return self.table.size

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"


class LowRankEmbedding(_EmbeddingBase):
    """Factorized embedding table E = A B, looked up and expanded in one call.

    LowRankEmbedding(A, B, *, padding_idx=None): A (num_embeddings, rank), B (rank, embedding_dim).
    ``from_dense(table, *, rank= | energy= | ratio=, calibration=None)`` factorizes a trained table.
    """

    def __init__(self, A, B, *, padding_idx=None):
        a = _float_matrix(A, "A")
        b = _float_matrix(B, "B")
        if a.shape[1] != b.shape[0]:
            raise ValueError(
                f"rank mismatch: A has shape {a.shape} (num_embeddings, rank) but B has shape "
                f"{b.shape} (rank, embedding_dim)"
            )
        self._core = _core._EmbeddingCore([a, b], _padding(padding_idx, a.shape[0]))

    @property
    def A(self):
        return self._core.factors[0]

    @property
    def B(self):
        return self._core.factors[1]

    @property
    def rank(self) -> int:
        return self._core.rank

    def dense_table(self):
        """The table A @ B (float32), padding row zeroed."""
        t = (self.A.astype(np.float64) @ self.B).astype(np.float32)
        if self.padding_idx is not None:
            t[self.padding_idx] = 0
        return t

    def num_params(self) -> int:
        return self.A.size + self.B.size

    def __repr__(self):
        return (
            f"LowRankEmbedding({self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"
            + ("" if self.padding_idx is None else f", padding_idx={self.padding_idx}")
            + ")"
        )

    @classmethod
    def from_dense(
        cls,
        table,
        *,
        rank=None,
        energy=None,
        ratio=None,
        vbmf=False,
        calibration=None,
        padding_idx=None,
    ):
        """LowRankEmbedding from a trained table (num, dim) by exactly one criterion: rank=r,
        energy=e (smallest rank keeping that fraction of the weighted squared norm), ratio=q
        (largest rank with r (num + dim) <= q num dim) or vbmf=True (empirical VBMF).
        calibration: token indices (any shape; e.g. a corpus) or None: rows are then weighted by
        sqrt(frequency + 1) in the truncated SVD, so frequent tokens are reproduced best (unseen
        ones still count once). The padding row is left out of the fit and stays exactly zero.
        The choice is in ``layer.rank_choice``."""
        from .decompose.criteria import linear_factors
        from .rank import RankChoice

        T = _float_matrix(table, "table").astype(np.float64)
        num, dim = T.shape
        pad = _padding(padding_idx, num)
        weights = np.ones(num)
        data = ""
        if calibration is not None:
            idx = _indices(calibration).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= num):
                raise ValueError(
                    f"calibration indices must be in [0, {num}), got values from {idx.min()} "
                    f"to {idx.max()}"
                )
            # intp: np.bincount refuses int64 on 32-bit ARM
            weights = np.sqrt(np.bincount(idx.astype(np.intp), minlength=num) + 1.0)
            data = f" (rows weighted by the frequencies of {idx.size} calibration indices)"
        if pad >= 0:
            weights[pad] = 0.0
        criteria = {"rank": rank, "energy": energy, "ratio": ratio, "vbmf": vbmf or None}
        given = [k for k, v in criteria.items() if v is not None]
        if len(given) != 1:
            raise ValueError(
                "LowRankEmbedding.from_dense takes exactly one of rank=, energy=, ratio=, "
                "vbmf=True; got " + (", ".join(given) or "none")
            )
        # The SVD of diag(w) T is a linear layer's problem, so the rank criteria are
        # LowRankLinear's. Its top right singular vectors span B; each row of T is projected on
        # them (A = T B^T with orthonormal rows of B), which is the best fit of every row with
        # w > 0, and the padding row (w = 0) gets A = 0.
        _, V, choice = linear_factors(weights[:, None] * T, **{given[0]: criteria[given[0]]}, reg=0)
        B = np.linalg.qr(V.T)[0].T
        A = (T @ B.T).astype(np.float32)
        if pad >= 0:
            A[pad] = 0.0
        layer = cls(A, B.astype(np.float32), padding_idx=None if pad < 0 else pad)
        layer.rank_choice = RankChoice(choice.rank, choice.reason + data, choice.details)
        return layer
