#!/usr/bin/env python3
"""Writes the hand-made seeds of cpp/fuzz/corpus/ (the input format is described at the top of
layer_fuzzer.cc): one small valid case per layer kind, and variants (NHWC, every ISA slot, three
threads on a case large enough to use them, shrunken cache blocking, 1-D input, strided rows).
The rest of the corpus is what libFuzzer kept from earlier runs (scripts/fuzz.sh merges it)."""
import pathlib

KINDS = ["LowRankLinear", "Linear", "Conv2d", "TuckerConv2d", "CPConv2d"]  # lrk::layer_kinds()
BIAS, NHWC, ONE_D, SWITCH_ISA, BLOCKING = 1, 2, 4, 8, 16


def small(v, lo, span=0xE0):  # Reader::size(lo, span) reads a byte < 0xE0 as lo + b % span
    assert lo <= v < lo + span
    return [v - lo]


def medium(v, lo):  # 0xE0 then a 16-bit value
    return [0xE0, (v - lo) >> 8, (v - lo) & 0xFF]


def header(kind, flags=BIAS, isa=0, threads=1, values=0, seed=7):
    return [KINDS.index(kind), flags, isa, threads - 1, values, seed, 1]


def linear(kind, out, inf, rank, batch, ldx_extra=0, blocking=(), **kw):
    b = header(kind, **kw) + small(out, 1) + small(inf, 1) + small(rank, 1)
    b += list(blocking)  # with flag 16: kc, nc, mc, mb bytes, read before the input
    return b + small(batch, 0) + [ldx_extra] + [1]


def conv(kind, cin, cout, r1, r2, k, stride, pad, dil, n, h, w, **kw):
    b = header(kind, **kw) + small(cin, 1) + small(cout, 1) + small(r1, 1) + small(r2, 1)
    b += small(k[0], 1) + small(k[1], 1) + small(stride[0], 1) + small(stride[1], 1)
    b += small(pad[0], 0) + small(pad[1], 0) + small(dil[0], 1) + small(dil[1], 1)
    size = lambda v, lo, span: small(v, lo, span) if v - lo < span else medium(v, lo)
    return b + size(n, 0, 3) + size(h, 1, 12) + size(w, 1, 12) + [1]


seeds = {}
for kind in ("LowRankLinear", "Linear"):
    seeds[f"{kind}-small"] = linear(kind, 5, 7, 3, 3)
    seeds[f"{kind}-strided-rows-avx"] = linear(kind, 9, 11, 4, 5, ldx_extra=3, isa=2)
    seeds[f"{kind}-1d-blocking"] = linear(kind, 16, 13, 8, 1, flags=BIAS | ONE_D | BLOCKING,
                                          blocking=(3, 8, 5, 4))
    seeds[f"{kind}-batch-blocking"] = linear(kind, 16, 13, 8, 7, ldx_extra=2, flags=BIAS | BLOCKING,
                                             isa=2, blocking=(3, 8, 5, 4))
for kind in ("Conv2d", "TuckerConv2d", "CPConv2d"):
    seeds[f"{kind}-small"] = conv(kind, 3, 4, 2, 2, (3, 3), (1, 2), (1, 1), (1, 1), 2, 7, 6)
    seeds[f"{kind}-nhwc-dilated"] = conv(kind, 5, 3, 3, 2, (2, 3), (2, 1), (0, 2), (2, 1), 1, 9, 8,
                                         flags=BIAS | NHWC, isa=1)
    seeds[f"{kind}-threads"] = conv(kind, 8, 8, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 2, 22, 22,
                                    isa=2, threads=3, flags=BIAS | SWITCH_ISA)

out = pathlib.Path(__file__).resolve().parent / "corpus"
out.mkdir(exist_ok=True)
for name, data in seeds.items():
    (out / f"seed-{name}").write_bytes(bytes(data))
print(f"{len(seeds)} seeds in {out}")
