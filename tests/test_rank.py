"""lrkernels.rank: energy, compression ratio, EVBMF, score and budget criteria, each with its
reason; the targets are checked exactly as the docstrings define them."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from lrkernels import decompose, rank
from lrkernels.rank import RankChoice, RankWarning


def _kept(s, r):
    e = np.sort(s)[::-1] ** 2
    return e[:r].sum() / e.sum()


# --------------------------------------------------------------------------------------------
# energy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(30, 20), (5, 50), (64, 64), (1, 8)])
def test_by_energy_is_the_smallest_rank_meeting_the_target(rng, shape):
    W = rng.standard_normal(shape) * (1 + np.arange(shape[1])) ** -0.8
    s = np.linalg.svd(W, compute_uv=False)
    for energy in [1e-9, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999999, 1.0]:
        c = rank.by_energy(W, energy)
        assert isinstance(c, RankChoice) and isinstance(c.rank, int) and c.reason
        r = c.rank
        assert 1 <= r <= min(shape)
        assert _kept(s, r) >= energy or r == np.count_nonzero(s)
        if r > 1:
            assert _kept(s, r - 1) < energy
        assert c.details["kept"] == pytest.approx(_kept(s, r))
        # singular values given directly (any order) give the same rank
        assert rank.by_energy(s[::-1], energy).rank == r
        # and the truncated SVD at that rank keeps that energy (Eckart-Young)
        U, V = decompose.svd(W, r)
        kept = 1 - np.linalg.norm(W - U.astype(np.float64) @ V) ** 2 / np.linalg.norm(W) ** 2
        assert kept >= min(energy, c.details["kept"]) - 1e-5


def test_by_energy_full_and_deficient_rank(rng):
    W = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 8))
    assert rank.by_energy(W, 1.0).rank == 3  # the numerical rank, not min(shape)
    assert rank.by_energy(np.array([3.0, 0.0, 0.0]), 1.0).rank == 1
    assert rank.by_energy(np.array([1.0, 1.0, 1.0, 1.0]), 0.5).rank == 2  # exactly 0.5 kept


@pytest.mark.parametrize(
    "energy", [0, 0.0, -0.1, 1.0000001, 2, float("nan"), float("inf"), True, None, "0.9"]
)
def test_by_energy_bad_energy(rng, energy):
    with pytest.raises(ValueError, match="energy"):
        rank.by_energy(rng.standard_normal((4, 4)), energy)


def test_by_energy_zero_matrix_warns():
    with pytest.warns(RankWarning, match="all zeros"):
        assert rank.by_energy(np.zeros((3, 4)), 0.5).rank == 1


def test_by_energy_tucker2_keeps_the_energy(rng):
    T = rng.standard_normal((16, 12, 3, 3)) * (1 + np.arange(16))[:, None, None, None] ** -1.0
    total = np.sum(T**2)
    for energy in [0.3, 0.6, 0.8, 0.9, 0.99]:
        c = rank.by_energy_tucker2(T, energy)
        r_in, r_out = c.rank
        assert 1 <= r_in <= 12 and 1 <= r_out <= 16
        f, core, last = decompose.tucker2(T, c.rank, method="hosvd")
        That = np.einsum("os,sryx,rc->ocyx", last.astype(np.float64), core, f)
        kept = 1 - np.sum((T - That) ** 2) / total
        assert kept >= energy - 1e-5, (energy, c.rank, kept)
        assert c.details["kept_bound"] >= energy - 1e-12
        # the cheapest such pair: no pair with fewer parameters satisfies the bound
        s0 = np.linalg.svd(T.reshape(16, -1), compute_uv=False) ** 2
        s1 = np.linalg.svd(np.moveaxis(T, 1, 0).reshape(12, -1), compute_uv=False) ** 2
        p = rank.factorized_params(T.shape, c.rank, "tucker2")
        for a in range(1, 13):
            for b in range(1, 17):
                if rank.factorized_params(T.shape, (a, b), "tucker2") < p:
                    assert s1[a:].sum() + s0[b:].sum() > (1 - energy) * total * (1 + 1e-12)


# --------------------------------------------------------------------------------------------
# compression ratio
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 32), (100, 100), (7, 300), (3, 3), (1, 1)])
@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.25, 1 / 3, 0.5, 0.9, 1.0, 2.0, 10.0])
def test_by_ratio_linear(shape, ratio):
    dense = shape[0] * shape[1]
    params_1 = shape[0] + shape[1]
    if params_1 > ratio * dense:
        with pytest.raises(ValueError, match="too small"):
            rank.by_ratio(shape, ratio)
        return
    c = rank.by_ratio(shape, ratio)
    r = c.rank
    assert 1 <= r <= min(shape)
    assert r * (shape[0] + shape[1]) <= ratio * dense
    assert r == min(shape) or (r + 1) * (shape[0] + shape[1]) > ratio * dense
    assert c.details["params"] == rank.factorized_params(shape, r, "linear")


@pytest.mark.parametrize(
    "shape", [(64, 32, 3, 3), (32, 64, 3, 3), (16, 16, 1, 1), (48, 48, 5, 5), (3, 200, 3, 3)]
)
@pytest.mark.parametrize("ratio", [0.02, 0.1, 0.3, 0.6, 1.0, 3.0])
def test_by_ratio_tucker2(shape, ratio):
    cout, cin, kh, kw = shape
    dense = cout * cin * kh * kw
    try:
        c = rank.by_ratio(shape, ratio, "tucker2")
    except ValueError as exc:
        assert "too small" in str(exc)
        assert cin + kh * kw + cout > ratio * dense  # even (1, 1) does not fit
        return
    r_in, r_out = c.rank
    assert 1 <= r_in <= cin and 1 <= r_out <= cout
    p = cin * r_in + r_out * r_in * kh * kw + cout * r_out
    assert p == c.details["params"] <= ratio * dense
    # the documented split: both channel counts reduced by the same fraction j / max(Cin, Cout)
    big = max(cin, cout)
    j = max(r_in, r_out) if cin != cout else r_in
    assert (r_in, r_out) == (max(1, round(j * cin / big)), max(1, round(j * cout / big)))
    if j < big:  # the next step of the split does not fit
        nxt = (max(1, round((j + 1) * cin / big)), max(1, round((j + 1) * cout / big)))
        assert rank.factorized_params(shape, nxt, "tucker2") > ratio * dense


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5, 1.0])
def test_by_ratio_cp(ratio):
    shape = (64, 32, 3, 3)
    c = rank.by_ratio(shape, ratio, "cp")
    per = 64 + 32 + 3 + 3
    assert c.rank * per <= ratio * 64 * 32 * 9 < (c.rank + 1) * per


@pytest.mark.parametrize("ratio", [0, -0.5, float("nan"), float("inf"), True, None])
def test_by_ratio_bad_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        rank.by_ratio((10, 10), ratio)


@pytest.mark.parametrize(
    "shape,kind",
    [
        ((10,), "linear"),
        ((10, 10, 3, 3), "linear"),
        ((10, 10), "tucker2"),
        ((10, 0), "linear"),
        ((10, 10), "svd"),
    ],
)
def test_by_ratio_bad_shape(shape, kind):
    with pytest.raises(ValueError):
        rank.by_ratio(shape, 0.5, kind)


# --------------------------------------------------------------------------------------------
# EVBMF
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,planted,sigma",
    [((100, 80), 5, 0.1), ((60, 200), 3, 0.5), ((256, 128), 12, 0.05), ((40, 40), 1, 0.2)],
)
def test_vbmf_recovers_planted_rank(rng, shape, planted, sigma):
    m, n = shape
    signal = rng.standard_normal((m, planted)) @ rng.standard_normal((planted, n))
    signal *= (
        3
        * sigma
        * (math.sqrt(m) + math.sqrt(n))
        / np.linalg.svd(signal, compute_uv=False)[-1 + planted]
    )
    Y = signal + sigma * rng.standard_normal(shape)
    c = rank.vbmf(Y)
    assert c.rank == planted, c
    assert c.details["sigma2"] == pytest.approx(sigma**2, rel=0.25)
    assert rank.vbmf(Y.T).rank == planted  # orientation does not matter


def test_vbmf_known_noise_variance(rng):
    Y = rng.standard_normal((50, 4)) @ rng.standard_normal((4, 60)) * 3 + rng.standard_normal(
        (50, 60)
    )
    assert rank.vbmf(Y, sigma2=1.0).rank == 4
    with pytest.raises(ValueError, match="sigma2"):
        rank.vbmf(Y, sigma2=0.0)


@pytest.mark.parametrize("shape", [(200, 100), (50, 50), (8, 300)])
def test_vbmf_pure_noise_never_rank_zero(rng, shape):
    with pytest.warns(RankWarning, match="no component"):
        c = rank.vbmf(rng.standard_normal(shape))
    assert c.rank == 1 and "clamped" in c.reason


def test_vbmf_rank_one(rng):
    u, v = rng.standard_normal(30), rng.standard_normal(20)
    assert rank.vbmf(np.outer(u, v)).rank == 1
    assert rank.vbmf(np.outer(u, v) + 1e-3 * rng.standard_normal((30, 20))).rank == 1


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1)])
def test_vbmf_vectors_clamp_to_one(rng, shape):
    # one singular value: the noise estimate absorbs it, EVBMF keeps nothing -> clamped to 1
    with pytest.warns(RankWarning, match="no component"):
        c = rank.vbmf(rng.standard_normal(shape))
    assert c.rank == 1 and c.details["vbmf_rank"] == 0


@pytest.mark.parametrize("shape", [(2, 2), (2, 3), (3, 2), (3, 3), (2, 9)])
def test_vbmf_tiny_matrices(rng, shape):
    for _ in range(20):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always", RankWarning)
            c = rank.vbmf(rng.standard_normal(shape) * rng.uniform(1e-3, 1e3))
        assert 1 <= c.rank <= min(shape)
        assert c.details["vbmf_rank"] >= 1 or len(rec) == 1  # a clamp is always announced
        assert all(issubclass(w.category, RankWarning) for w in rec)


def test_vbmf_zero_and_exact_low_rank(rng):
    with pytest.warns(RankWarning, match="all zeros"):
        assert rank.vbmf(np.zeros((5, 4))).rank == 1
    for r in (2, 3, 10):
        Y = rng.standard_normal((40, r)) @ rng.standard_normal((r, 30))
        assert rank.vbmf(Y).rank == r


def test_vbmf_bad_input():
    for bad in (np.zeros((0, 3)), np.ones(4), np.array([[np.inf, 1.0]])):
        with pytest.raises(ValueError):
            rank.vbmf(bad)


def test_vbmf_tucker2_planted_ranks(rng):
    r_in, r_out = 4, 6
    core = rng.standard_normal((r_out, r_in, 3, 3))
    T = np.einsum(
        "os,sryx,rc->ocyx", rng.standard_normal((48, r_out)), core, rng.standard_normal((r_in, 40))
    )
    T = T / np.abs(T).max() + 0.01 * rng.standard_normal(T.shape)
    c = rank.vbmf_tucker2(T)
    assert c.rank == (r_in, r_out), c
    assert "r_in" in c.reason and "r_out" in c.reason


def test_vbmf_tucker2_noise_clamps_both(rng):
    with pytest.warns(RankWarning) as rec:
        c = rank.vbmf_tucker2(rng.standard_normal((16, 12, 3, 3)))
    assert c.rank == (1, 1)
    assert len(rec) == 2


# --------------------------------------------------------------------------------------------
# score
# --------------------------------------------------------------------------------------------


def test_by_score_smallest_within_tol():
    acc = {1: 0.50, 2: 0.70, 4: 0.80, 8: 0.845, 16: 0.85, 32: 0.849}
    calls = []

    def score(r):
        calls.append(r)
        return acc[r]

    c = rank.by_score(score, [32, 16, 8, 4, 2, 1], tol=0.01)
    assert c.rank == 8 and sorted(calls) == sorted(acc)
    assert rank.by_score(acc.get, acc, tol=0.0).rank == 16
    assert rank.by_score(acc.get, acc, tol=0.2).rank == 2
    assert rank.by_score(acc.get, acc, tol=0.06, relative=True).rank == 4  # 0.85 * 0.94 = 0.799
    loss = {r: 1 - a for r, a in acc.items()}
    assert rank.by_score(loss.get, loss, tol=0.01, higher_is_better=False).rank == 8
    assert c.details["best_score"] == 0.85 and "within" in c.reason


def test_by_score_tucker_pairs():
    scores = {(2, 2): 0.5, (4, 4): 0.9, (2, 8): 0.91, (8, 8): 0.92}
    assert rank.by_score(scores.get, list(scores), tol=0.015).rank == (2, 8)
    assert rank.by_score(lambda r: scores[tuple(r)], [[4, 4], [8, 8]], tol=0.05).rank == (4, 4)


@pytest.mark.parametrize(
    "fn,ranks,tol",
    [
        (float, [], 0.0),
        (float, [1, 2], -1.0),
        (lambda r: float("nan"), [1], 0.0),
        (lambda r: "x", [1], 0.0),
        (float, [1], float("nan")),
    ],
)
def test_by_score_errors(fn, ranks, tol):
    with pytest.raises(ValueError):
        rank.by_score(fn, ranks, tol)


# --------------------------------------------------------------------------------------------
# budget
# --------------------------------------------------------------------------------------------


def _spectrum(rng, shape, s):
    k = min(shape)
    U = np.linalg.qr(rng.standard_normal((shape[0], k)))[0]
    V = np.linalg.qr(rng.standard_normal((shape[1], k)))[0]
    return (U * s) @ V.T


def test_allocate_budget_linear(rng):
    a = _spectrum(rng, (40, 40), 0.5 ** np.arange(40))  # energy concentrated: few ranks suffice
    b = _spectrum(rng, (40, 40), (1 + np.arange(40)) ** -0.3)  # flat: ranks buy a lot
    c = rank.allocate_budget([a, b], budget=80 * 20)
    ra, rb = c.rank
    assert ra + rb == 20 and ra >= 1 and rb >= 1 and rb > ra
    assert c.details["params"] == 80 * (ra + rb) <= 80 * 20
    # optimal for equal costs: the 20 largest relative gains over both layers
    ga = (0.5 ** np.arange(40)) ** 2 / np.sum(0.25 ** np.arange(40))
    gb = (1 + np.arange(40)) ** -0.6 / np.sum((1 + np.arange(40)) ** -0.6)
    best = sum(sorted(np.concatenate([ga[1:], gb[1:]]), reverse=True)[:18]) + ga[0] + gb[0]
    assert ga[:ra].sum() + gb[:rb].sum() == pytest.approx(best)
    assert c.details["kept_energy"][0] == pytest.approx(ga[:ra].sum())


def test_allocate_budget_mixed_and_maximal(rng):
    layers = [
        rng.standard_normal((32, 48)),
        rng.standard_normal((16, 8, 3, 3)),
        rng.standard_normal((24, 16)) * 10,
    ]
    for weighting in ("relative", "absolute"):
        c = rank.allocate_budget(layers, ratio=0.4, weighting=weighting)
        r0, (ri, ro), r2 = c.rank
        params = [
            rank.factorized_params(layers[0].shape, r0, "linear"),
            rank.factorized_params(layers[1].shape, (ri, ro), "tucker2"),
            rank.factorized_params(layers[2].shape, r2, "linear"),
        ]
        budget = math.floor(0.4 * sum(w.size for w in layers))
        assert sum(params) == c.details["params"] <= budget == c.details["budget"]
        # maximal: no single further step fits
        left = budget - sum(params)
        assert r0 == 32 or 80 > left
        assert r2 == 16 or 40 > left
        assert (
            ri == 8
            or rank.factorized_params((16, 8, 3, 3), (ri + 1, ro), "tucker2") - params[1] > left
        )
        assert (
            ro == 16
            or rank.factorized_params((16, 8, 3, 3), (ri, ro + 1), "tucker2") - params[1] > left
        )


def test_allocate_budget_errors(rng):
    layers = [rng.standard_normal((10, 10)), rng.standard_normal((6, 6))]
    with pytest.raises(ValueError, match="below"):
        rank.allocate_budget(layers, budget=31)
    assert rank.allocate_budget(layers, budget=32).rank == [1, 1]
    with pytest.raises(ValueError, match="exactly one"):
        rank.allocate_budget(layers)
    with pytest.raises(ValueError, match="exactly one"):
        rank.allocate_budget(layers, budget=100, ratio=0.5)
    with pytest.raises(ValueError):
        rank.allocate_budget([], budget=100)
    with pytest.raises(ValueError):
        rank.allocate_budget([np.ones(5)], budget=100)
    with pytest.raises(ValueError):
        rank.allocate_budget(layers, ratio=0.0)
    with pytest.raises(ValueError):
        rank.allocate_budget(layers, budget=100, weighting="l2")


def test_kind_accepts_the_layer_class_names():
    for cls_name, short, shape, r in (
        ("LowRankLinear", "linear", (30, 20), 4),
        ("TuckerConv2d", "tucker2", (16, 12, 3, 3), (3, 5)),
        ("CPConv2d", "cp", (16, 12, 3, 3), 4),
    ):
        assert rank.factorized_params(shape, r, cls_name) == rank.factorized_params(shape, r, short)
        assert rank.by_ratio(shape, 0.3, cls_name).rank == rank.by_ratio(shape, 0.3, short).rank
    with pytest.raises(ValueError, match="kind must be one of .*LowRankLinear"):
        rank.by_ratio((3, 4), 0.5, "Linear")


def test_by_energy_tucker2_energy_one_gives_the_numerical_ranks(rng):
    # Rounding-level singular values used to make every pair fail at energy=1 (full ranks).
    import lrkernels

    assert lrkernels.TuckerConv2d.from_dense(np.ones((4, 3, 3, 3)), energy=1.0).ranks == (1, 1)
    assert rank.by_energy_tucker2(np.ones((4, 3, 3, 3)), 1.0).rank == (1, 1)
    first, core, last = (rng.standard_normal(s) for s in [(2, 6), (3, 2, 3, 3), (8, 3)])
    T = np.einsum("os,sryx,rc->ocyx", last, core, first)  # ranks (r_in, r_out) = (2, 3)
    assert rank.by_energy_tucker2(T, 1.0).rank == (2, 3)
    full = rng.standard_normal((6, 5, 3, 3))
    assert rank.by_energy_tucker2(full, 1.0).rank == (5, 6)
