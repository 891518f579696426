"""Embedding tables (dense and low-rank) against the numpy reference, on every ISA."""

from __future__ import annotations

import numpy as np
import pytest

import lrkernels
from lrkernels import reference


def _factors(rng, num, dim, rank):
    A = rng.standard_normal((num, rank)).astype(np.float32)
    B = (rng.standard_normal((rank, dim)) / np.sqrt(rank)).astype(np.float32)
    return A, B


# (num_embeddings, embedding_dim, rank): dims around the GEMM panel widths 8, 16, 32
SHAPES = [(1, 1, 1), (10, 15, 3), (50, 16, 8), (37, 17, 17), (300, 33, 5), (64, 64, 32)]
INDEX_SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 0, 3), (300,)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_matches_reference(isa, rng, shape, dtype):
    num, dim, rank = shape
    A, B = _factors(rng, num, dim, rank)
    low = lrkernels.LowRankEmbedding(A, B)
    dense = lrkernels.Embedding(A @ B)
    for ishape in INDEX_SHAPES:
        idx = rng.integers(0, num, size=ishape).astype(dtype)
        y = low(idx)
        assert y.shape == ishape + (dim,) and y.dtype == np.float32
        ref = reference.embedding(idx, (A, B))
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.sqrt(rank))
        assert np.array_equal(dense(idx), (A @ B)[idx])  # a dense lookup copies rows exactly
    assert lrkernels.last_used_isa() == isa


def test_padding_rows_are_exactly_zero(isa, rng):
    A, B = _factors(rng, 20, 24, 6)
    B[0, 0] = np.inf  # 0 * inf would be NaN: the padding row is written as zeros instead
    for layer in (
        lrkernels.LowRankEmbedding(A, B, padding_idx=3),
        lrkernels.Embedding(A @ B, padding_idx=-17),
    ):
        assert layer.padding_idx == 3
        y = layer(np.array([[3, 1], [3, 3]]))
        assert np.all(y[0, 0] == 0) and np.all(y[1] == 0)
        assert not np.all(y[0, 1] == 0)


def test_threads_bitwise_identical(rng):
    A, B = _factors(rng, 1000, 200, 48)
    layer = lrkernels.LowRankEmbedding(A, B)
    idx = rng.integers(0, 1000, size=700)
    before = lrkernels.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            lrkernels.set_num_threads(n)
            outs.append(layer(idx))
    finally:
        lrkernels.set_num_threads(before)
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])


def test_indices_changed_during_a_lookup_never_read_out_of_bounds():
    """The lookup runs without the GIL: another thread may write the index array meanwhile.
    Each index is read once and checked, so a call either raises or returns valid rows."""
    import threading

    table = lrkernels.Embedding(np.ones((4, 8), np.float32))
    idx = np.zeros(200_000, np.int64)
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            idx[-1] = 2**40
            idx[-1] = 0

    t = threading.Thread(target=flip)
    t.start()
    try:
        for _ in range(20):
            try:
                assert table(idx).shape == (200_000, 8)
            except ValueError as e:
                assert "out of range" in str(e)
    finally:
        stop.set()
        t.join()


def test_bad_indices_raise_before_reading(rng):
    A, B = _factors(rng, 10, 4, 2)
    for layer in (lrkernels.LowRankEmbedding(A, B), lrkernels.Embedding(A @ B)):
        with pytest.raises(ValueError, match="index 10 at position 2 .*num_embeddings=10"):
            layer(np.array([0, 1, 10]))
        with pytest.raises(ValueError, match="index -1 at position 0"):
            layer(np.array([-1]))
        with pytest.raises(ValueError, match="out of range"):
            layer(np.array([2**40]))
        with pytest.raises(ValueError, match="out of range"):
            layer(np.array([2**63], dtype=np.uint64))
        with pytest.raises(TypeError, match="integer dtype.*astype"):
            layer(np.array([1.0, 2.0]))
        with pytest.raises(TypeError, match="integer dtype"):
            layer(np.array([1.5]))
        with pytest.raises(TypeError, match="integer dtype"):
            layer(np.array([True]))
        with pytest.raises(TypeError, match="integer dtype"):
            layer(["a"])
        assert layer(np.array([], dtype=np.int64)).shape == (0, 4)
        assert layer(np.array([3], dtype=np.uint8)).shape == (1, 4)
        assert layer(np.array([3], dtype=np.longlong)).shape == (1, 4)  # 'q', equal to int64
        assert layer(np.array([3], dtype=">i8")).shape == (1, 4)  # non-native byte order
    with pytest.raises(ValueError, match="rank mismatch"):
        lrkernels.LowRankEmbedding(A, B[:1])
    with pytest.raises(ValueError, match="padding_idx=10"):
        lrkernels.LowRankEmbedding(A, B, padding_idx=10)
    with pytest.raises(TypeError, match="padding_idx"):
        lrkernels.Embedding(A, padding_idx=1.0)
    with pytest.raises(TypeError, match="floating-point"):
        lrkernels.Embedding(np.zeros((3, 3), np.int32))


def test_from_dense(rng):
    # a table of decaying spectrum: low rank fits it well
    U = rng.standard_normal((400, 64))
    T = ((U * 0.8 ** np.arange(64)) @ rng.standard_normal((64, 48))).astype(np.float32)
    full = lrkernels.LowRankEmbedding.from_dense(T, rank=48)
    idx = np.arange(400)
    np.testing.assert_allclose(full(idx), T, rtol=1e-4, atol=1e-4)
    low = lrkernels.LowRankEmbedding.from_dense(T, energy=0.99)
    assert low.rank == low.rank_choice.rank < 48
    assert low.num_params() < T.size
    # frequency-weighted: frequent tokens are reproduced better than by the plain SVD
    frequent = rng.integers(0, 3, size=5000)  # three tokens: rank 4 can hold them
    plain = lrkernels.LowRankEmbedding.from_dense(T, rank=4)
    weighted = lrkernels.LowRankEmbedding.from_dense(T, rank=4, calibration=frequent)
    err = lambda layer: np.linalg.norm(layer(np.arange(3)) - T[:3])  # noqa: E731
    assert err(weighted) < 0.5 * err(plain)
    pad = lrkernels.LowRankEmbedding.from_dense(T, rank=8, padding_idx=0)
    assert np.all(pad(np.array([0])) == 0)
    with pytest.raises(ValueError, match="exactly one"):
        lrkernels.LowRankEmbedding.from_dense(T)
    with pytest.raises(ValueError, match=r"\[0, 400\)"):
        lrkernels.LowRankEmbedding.from_dense(T, rank=2, calibration=np.array([400]))


def test_matches_torch_embedding(rng):
    torch = pytest.importorskip("torch")
    emb = torch.nn.Embedding(30, 12, padding_idx=2)
    layer = lrkernels.Embedding(emb.weight.detach().numpy(), padding_idx=2)
    idx = rng.integers(0, 30, size=(4, 6))
    with torch.no_grad():
        ref = emb(torch.from_numpy(idx)).numpy()
    assert np.array_equal(layer(idx), ref)
