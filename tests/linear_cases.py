"""The linear layers' named sweeps (see layer_sweeps.SWEEPS) and their cases for shrunken cache
blocks. `tile` is the ISA's (mr, nr, kc).
"""

from __future__ import annotations

from layer_cases import DIMS, RANKS, Case, batches_for, with_activation


def linear_tile_edges(kind, tile):
    """Every (in, out) pair of DIMS; ranks, batches (1-D included) and bias cycle along."""
    batches = [None] + batches_for(tile.mr)
    return [
        Case(
            batches[(3 * i + j) % len(batches)],
            in_f,
            out_f,
            bias=(i + j) % 2 == 0,
            ranks=(RANKS[(i + 2 * j) % len(RANKS)],) * 2,
        )
        for i, in_f in enumerate(DIMS)
        for j, out_f in enumerate(DIMS)
    ]


def linear_ranks(kind, tile):
    """Ranks 1..256 against a few in/out shapes and batches around mr."""
    mr = tile.mr
    shapes = [(1, 1), (17, 33), (64, 5), (33, 65)]
    return [
        Case(batch, in_f, out_f, bias=(rank + k) % 2 == 0, ranks=(rank, rank))
        for rank in RANKS
        for k, (in_f, out_f) in enumerate(shapes)
        for batch in (None, 1, mr - 1, mr, mr + 1, 2 * mr + 1, 37)
    ]


def linear_batches(kind, tile):
    """Batch 0, 1, 2, 3, odd, mr-1 .. 2*mr+1, 100 and 300 on shapes at the tile edges, with and
    without bias; and shapes larger than the default blocks (K > kc, out > nc, batch > mc)."""
    nr = tile.nr
    shapes = [
        (7, 3, 5),
        (33, nr + 1, 17),
        (65, 2 * nr - 1, 64),
        (16, nr, nr),
        (256, 3 * nr + 5, 33),
    ]  # (in, out, rank)
    cases = [
        Case(batch, in_f, out_f, bias=bias, ranks=(rank, rank))
        for in_f, out_f, rank in shapes
        for batch in [None] + batches_for(tile.mr)
        for bias in (True, False)
    ]
    return cases + [Case(b, 1000, 600, ranks=(300, 300)) for b in (300, 3)]


def linear_blocked_cases(kind, tile) -> list:
    """Cases for shrunken cache blocks: K, ranks, out and batch cross several blocks, none a block
    multiple."""
    mr, nr = tile.mr, tile.nr
    shapes = [
        (23, 2 * nr + 5, 5 * nr + 3),
        (64, 3 * nr + 1, 2 * nr + 1),
        (9, 7, nr - 1),
        (1, 1, 1),
        (17, nr, 3 * nr),
    ]  # (in, rank, out)
    return [
        Case(batch, in_f, out_f, bias=k % 2 == 0, ranks=(rank, rank))
        for k, (in_f, rank, out_f) in enumerate(shapes)
        for batch in (None, 1, mr, mr + 1, 2 * mr, 4 * mr + 3, 7 * mr + 1, 61)
    ]


def linear_activations(kind, tile):
    """Every other (in, out) pair of the tile edges and the batches around mr, each with relu,
    relu6 or an asymmetric clamp in turn (the clamp's vector body and tails)."""
    return with_activation(linear_tile_edges(kind, tile)[::2]) + with_activation(
        [c for c in linear_batches(kind, tile) if c.in_dim < 1000]
    )
