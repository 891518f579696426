"""The named sweeps of cases every layer kind runs (linear sweeps for linear kinds, conv sweeps
for convolutions; "ranks" only for factorized kinds), and the cases for shrunken cache blocks.
`tile` is the ISA's (mr, nr, kc).
"""

from __future__ import annotations

from conv_cases import (
    conv_activations,
    conv_blocked_cases,
    conv_geometry,
    conv_ranks,
    conv_sizes,
    conv_tile_edges,
)
from layer_cases import with_activation
from layer_table import SPEC
from linear_cases import (
    linear_activations,
    linear_batches,
    linear_blocked_cases,
    linear_ranks,
    linear_tile_edges,
)

SWEEPS = {  # name: (linear cases, conv cases); None where the sweep does not apply
    "tile-edges": (linear_tile_edges, conv_tile_edges),
    "batches": (linear_batches, None),
    "geometry": (None, conv_geometry),
    "sizes": (None, conv_sizes),
    "ranks": (linear_ranks, conv_ranks),
    "activations": (linear_activations, conv_activations),  # activation= relu, relu6, (lo, hi)
}


def sweeps_for(kind) -> list:
    spec = SPEC[kind]
    return [
        name
        for name, fns in SWEEPS.items()
        if fns[spec.conv] is not None and (name != "ranks" or spec.factorized)
    ]


def sweep(name, kind, tile) -> list:
    return SWEEPS[name][SPEC[kind].conv](kind, tile)


def blocked_cases(kind, tile) -> list:
    """Cases for shrunken cache blocks: K, ranks, channels, pixels and batch cross several
    blocks, none a block multiple."""
    return (conv_blocked_cases if SPEC[kind].conv else linear_blocked_cases)(kind, tile)


def blocked_activation_cases(kind, tile) -> list:
    """The blocked cases, each with relu, relu6 or an asymmetric clamp in turn: the clamp must
    come after the last K block only."""
    return with_activation(blocked_cases(kind, tile))
