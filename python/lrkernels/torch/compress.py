"""``compress(model, ...)``: every nn.Linear / nn.Conv2d (and nn.LSTM / nn.GRU / nn.Embedding) of a
model factorized by one criterion, with a per-layer report (ranks and why, parameters, FLOPs,
calibration error, measured latency).

Layers are taken in the order the model runs them (recorded on the first calibration batch or on
``example_inputs``; module order otherwise). With ``calibration=``, each layer's real inputs are
captured with a forward hook on the model *as compressed so far*, so later layers are fitted to
the inputs they will see, and the fit is data-aware (``from_dense(calibration=...)``).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import itertools
import numbers
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import lrkernels
from lrkernels.decompose.calibration import _sqrt_and_inv_sqrt
from lrkernels.rank import allocate_budget, by_ratio

from ._kernel_cache import KernelModule
from .asymmetric import asymmetric_error, asymmetric_target
from .convert import (
    factorize_conv,
    factorize_embedding,
    factorize_linear,
    factorize_rnn,
    to_numpy,
    why_not_factorizable,
)
from .embedding import LowRankEmbedding
from .modules import CPConv2d, FactorizedModule, TuckerConv2d, check_precision
from .recurrent import _LowRankRNNBase

__all__ = ["CompressionReport", "LayerReport", "compress"]

_CRITERIA = ("rank", "energy", "ratio", "vbmf", "budget", "latency_target")
# Ratios tried, most accurate first, when choosing ranks by measured latency.
_LATENCY_LADDER = (0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03)
# Sequence and lookup layers: factorized per matrix by rank=/energy=/ratio=/vbmf=True only.
_SEQUENCE_TYPES = (nn.LSTM, nn.GRU, nn.Embedding)
_SEQUENCE_CRITERIA = ("rank", "energy", "ratio", "vbmf")


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


@dataclass
class LayerReport:
    """One nn.Linear / nn.Conv2d / nn.LSTM / nn.GRU / nn.Embedding of the model: what became of it
    and what it costs."""

    name: str
    dense_kind: str  # "Linear" / "Conv2d" / "LSTM" / "GRU" / "Embedding"
    kind: str  # the module now there: "LowRankLinear", "TuckerConv2d", ... or dense_kind
    # the dense weight's shape; LSTM/GRU: (num_layers * directions, G * hidden, input, hidden)
    shape: tuple
    input_shape: tuple | None  # of the first recorded call
    ranks: object = None  # LSTM/GRU: a list of (r_ih, r_hh) per layer and direction
    reason: str = ""  # why these ranks, or why the layer stayed dense
    # the fused inference kernel's precision ("fp32" / "fp16" / "int8"); None for a dense layer
    precision: str | None = None
    params_before: int = 0
    params_after: int = 0
    flops_before: int | None = None  # multiply-adds x 2 at the recorded input shape
    flops_after: int | None = None
    error: float | None = None  # relative output error on the calibration inputs
    latency_dense_s: float | None = None  # the dense torch module, measured here
    latency_fused_s: float | None = None  # the factorized module on the fused kernels
    details: dict = field(default_factory=dict)

    @property
    def compressed(self) -> bool:
        return self.kind != self.dense_kind

    @property
    def speedup(self) -> float | None:
        if self.latency_dense_s and self.latency_fused_s:
            return self.latency_dense_s / self.latency_fused_s
        return None


@dataclass
class CompressionReport:
    """The per-layer rows of a ``compress`` call and their totals; ``print(report)`` shows a
    table."""

    layers: list
    criterion: dict
    num_threads: int
    seconds: float = 0.0

    @property
    def params_before(self) -> int:
        return sum(r.params_before for r in self.layers)

    @property
    def params_after(self) -> int:
        return sum(r.params_after for r in self.layers)

    @property
    def flops_before(self):
        vals = [r.flops_before for r in self.layers]
        return None if any(v is None for v in vals) else sum(vals)

    @property
    def flops_after(self):
        vals = [r.flops_after for r in self.layers]
        return None if any(v is None for v in vals) else sum(vals)

    def __getitem__(self, name) -> LayerReport:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        """JSON-able rows and totals."""
        rows = []
        for r in self.layers:
            d = {k: getattr(r, k) for k in r.__dataclass_fields__ if k != "details"}
            d["ranks"] = list(r.ranks) if isinstance(r.ranks, tuple) else r.ranks
            d["speedup"] = r.speedup
            rows.append(d)
        return {
            "criterion": {k: v for k, v in self.criterion.items() if k != "calibration"},
            "num_threads": self.num_threads,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "layers": rows,
        }

    def __str__(self) -> str:
        def us(s):
            return "-" if s is None else f"{s * 1e6:.0f}"

        def num(v):
            if v is None:
                return "-"
            return f"{v / 1e6:.2f}M" if v >= 1e6 else (f"{v / 1e3:.1f}k" if v >= 1e3 else str(v))

        head = ("layer", "kind", "ranks", "params", "MFLOPs", "error", "dense us", "fused us", "x")
        rows = []
        for r in self.layers:
            fl = (
                "-"
                if r.flops_before is None
                else f"{r.flops_before / 1e6:.1f}>{r.flops_after / 1e6:.1f}"
            )
            rows.append(
                (
                    r.name,
                    r.kind,
                    "-" if r.ranks is None else str(r.ranks).replace(" ", ""),
                    f"{num(r.params_before)}>{num(r.params_after)}",
                    fl,
                    "-" if r.error is None else f"{r.error:.3g}",
                    us(r.latency_dense_s),
                    us(r.latency_fused_s),
                    "-" if r.speedup is None else f"{r.speedup:.2f}",
                )
            )
        widths = [
            max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
            for i, h in enumerate(head)
        ]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        pb, pa = self.params_before, self.params_after
        total = f"total: {num(pb)} -> {num(pa)} parameters (weights and biases) in these layers"
        if pb:
            total += f" ({pa / pb:.3f}, {pb / max(pa, 1):.2f}x fewer)"
        if self.flops_before:
            total += f"; {self.flops_before / 1e6:.1f} -> {self.flops_after / 1e6:.1f} MFLOPs"
        crit = ", ".join(f"{k}={v!r}" for k, v in self.criterion.items() if k != "calibration")
        lines.append(total)
        lines.append(f"criterion: {crit}; {self.num_threads} thread(s); {self.seconds:.1f} s")
        dense = [r for r in self.layers if not r.compressed]
        for r in dense:
            lines.append(f"  {r.name} left dense: {r.reason}")
        for r in self.layers:
            if "precision" in r.details:
                lines.append(f"  {r.name} at {r.precision}: {r.details['precision']}")
        return "\n".join(lines)

    __repr__ = __str__


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def time_call(fn, budget_s=0.03, max_calls=200):
    """Median seconds of ``fn()`` over repeated calls within about ``budget_s`` (after a warm-up
    call), at least 3 calls."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget_s and len(times) < max_calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


@contextlib.contextmanager
def pinned_threads(n):
    """torch, lrkernels and (with threadpoolctl installed) numpy's BLAS at ``n`` threads: BLAS
    oversubscription made decompositions many times slower."""
    old_torch, old_lrk = torch.get_num_threads(), lrkernels.get_num_threads()
    torch.set_num_threads(n)
    lrkernels.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            limiter = contextlib.nullcontext()
        else:
            limiter = threadpool_limits(limits=n)
        with limiter:
            yield
    finally:
        torch.set_num_threads(old_torch)
        lrkernels.set_num_threads(old_lrk)


def _matches(name, module, patterns):
    for p in patterns:
        if isinstance(p, type):
            if isinstance(module, p):
                return True
        elif isinstance(p, str):
            if name == p or fnmatch.fnmatchcase(name, p) or name.startswith(p + "."):
                return True
        else:
            raise TypeError(
                f"include/exclude entries must be module names, patterns or types, got {p!r}"
            )
    return False


def _as_args(batch):
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


def set_submodule(model, name, module):
    """Replace the submodule at dotted path ``name``."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the layer's input is captured."""


def _run(model, batch):
    with torch.no_grad():
        try:
            model(*_as_args(batch))
        except TypeError as e:
            if not isinstance(batch, (tuple, list)):
                raise
            raise TypeError(
                f"{e} (a calibration/example batch that is a tuple or list is passed to the "
                "model as its positional arguments: for (inputs, labels) batches pass "
                "calibration=[x for x, _ in loader] or a generator of inputs)"
            ) from e


def _record_calls(model, modules, batch):
    """Execution order and first input shape of ``modules`` (name -> module) on one batch."""
    order, shapes, handles = [], {}, []
    for name, m in modules.items():

        def hook(mod, args, name=name):
            if name not in shapes and args and isinstance(args[0], torch.Tensor):
                shapes[name] = tuple(args[0].shape)
                order.append(name)

        handles.append(m.register_forward_pre_hook(hook))
    try:
        _run(model, batch)
    finally:
        for h in handles:
            h.remove()
    return order, shapes


def _run_until_captured(model, module, batches, hook, full):
    """Runs the model on the batches with ``hook`` as ``module``'s forward pre-hook (it raises
    _Stop once it has the input, ending the pass there) until ``full()``."""
    handle = module.register_forward_pre_hook(hook)
    try:
        for batch in batches:
            if full():
                break
            try:
                _run(model, batch)
            except _Stop:
                pass
    finally:
        handle.remove()


def _capture_inputs(model, module, batches, max_rows):
    """The inputs ``module`` receives over the calibration batches (linear: rows (n, in);
    conv: NCHW images), at most ``max_rows`` rows / pixels, as a float64 array; the forward
    pass stops once the module has run."""
    captured, count = [], [0]

    def hook(mod, args):
        x = args[0].detach()
        if isinstance(module, nn.Linear):
            x = x.reshape(-1, x.shape[-1])
            room = max_rows - count[0]
            x = x[:room]
            count[0] += x.shape[0]
        else:
            per_image = x.shape[-1] * x.shape[-2]
            take = max(1, (max_rows - count[0]) // max(per_image, 1))
            x = x[:take] if x.ndim == 4 else x[None]
            count[0] += x.shape[0] * per_image
        if x.shape[0]:
            captured.append(to_numpy(x))
        raise _Stop

    _run_until_captured(model, module, batches, hook, lambda: count[0] >= max_rows)
    return np.concatenate(captured) if captured else None


def _whitened(weight, X):
    """The weight with its inputs whitened by the calibration inputs X (the dense model's): for a
    matrix W C^(1/2), for a conv weight its input channels through C_chan^(1/2) (C: the second
    moment of the inputs / of their channels). Its spectra are output-energy spectra on X."""
    W = np.asarray(weight, np.float64)
    X = np.asarray(X, np.float64)
    A = (
        X.reshape(-1, X.shape[-1])
        if W.ndim == 2
        else X.transpose(1, 0, 2, 3).reshape(X.shape[1], -1).T
    )
    S, _ = _sqrt_and_inv_sqrt(A.T @ A / max(A.shape[0], 1))
    if W.ndim == 2:
        return W @ S
    return np.einsum("ocyx,cd->odyx", W, S)


def _capture_sequences(model, module, batches, max_rows):
    """The input tensors (sequences, index tensors) ``module`` receives over the calibration
    batches, as a list (lengths may differ), until ``max_rows`` steps x batch (indices) are kept;
    None when it received none (e.g. a PackedSequence)."""
    captured, count = [], [0]

    def hook(mod, args):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor):
            captured.append(x.detach().cpu())
            count[0] += x.numel() // (x.shape[-1] if x.is_floating_point() and x.ndim else 1)
        raise _Stop

    _run_until_captured(model, module, batches, hook, lambda: count[0] >= max_rows)
    return captured or None


def _min_rank(ranks):
    """The smallest rank in ``ranks`` (an int, a pair, or a list of (r_ih, r_hh) pairs with None
    for a dense matrix); None when none is factorized."""
    flat = [r for r in np.ravel(np.array(ranks, dtype=object)).tolist() if r is not None]
    flat = [v for r in flat for v in (r if isinstance(r, (tuple, list)) else (r,)) if v is not None]
    return min(flat) if flat else None


def _rank_bounds(module, new):
    """(chosen rank, its bound) pairs of a factorized module: the bound is the rank of the full
    matrix (or mode) it factorizes."""
    if isinstance(new, _LowRankRNNBase):
        pairs = []
        for k, (r_ih, r_hh) in enumerate(new.ranks):
            layer_in = (
                module.input_size
                if k < (2 if module.bidirectional else 1)
                else (module.hidden_size * (2 if module.bidirectional else 1))
            )
            rows = module.weight_ih_l0.shape[0]
            pairs += [(r_ih, min(rows, layer_in)), (r_hh, min(rows, module.hidden_size))]
        return [(r, b) for r, b in pairs if r is not None]
    if isinstance(module, nn.Embedding):
        return [(new.rank, min(module.num_embeddings, module.embedding_dim))]
    if isinstance(module, nn.Linear):
        return [(new.rank, min(module.in_features, module.out_features))]
    rank = new.rank
    if isinstance(rank, (tuple, list)):  # Tucker-2: (r_in, r_out)
        return [(rank[0], module.in_channels), (rank[1], module.out_channels)]
    return [(rank, min(module.in_channels, module.out_channels))]


def _collapsed_rank(module, new, min_rank):
    """Why the layer stays dense when a chosen rank is below min_rank without being full; None
    otherwise."""
    low = [(r, b) for r, b in _rank_bounds(module, new) if r < min_rank and r < b]
    if not low:
        return None
    r, b = low[0]
    return (
        f"the criterion chose rank {r} of {b} (below min_rank={min_rank}): a rank-{r} "
        "factorization would collapse this layer, so it stays dense"
    )


def _params(module):
    return sum(p.numel() for p in module.parameters())


def _macs(module, input_shape):
    """Multiply-adds of one call at ``input_shape`` (None if unknown)."""
    if input_shape is None:
        return None
    if isinstance(module, (nn.Embedding, LowRankEmbedding)):
        if isinstance(module, nn.Embedding):
            return 0  # a row copy
        return int(np.prod(input_shape)) * module.rank * module.embedding_dim
    if isinstance(module, (nn.LSTM, nn.GRU, _LowRankRNNBase)):
        steps = int(np.prod(input_shape[:-1])) if len(input_shape) > 1 else 1
        return steps * _rnn_macs_per_step(module)
    if isinstance(module, (nn.Linear, FactorizedModule)) and not getattr(module, "is_conv", False):
        rows = int(np.prod(input_shape[:-1])) if len(input_shape) > 1 else 1
        if isinstance(module, nn.Linear):
            return rows * module.in_features * module.out_features
        return rows * module.rank * (module.in_features + module.out_features)
    n = input_shape[0] if len(input_shape) == 4 else 1
    h, w = input_shape[-2:]
    kh, kw = module.kernel_size
    sh, sw = module.stride
    dh, dw = module.dilation
    if isinstance(module.padding, str):  # "valid", or "same" (stride 1: the input's size)
        oh, ow = (h, w) if module.padding == "same" else (h - dh * (kh - 1), w - dw * (kw - 1))
    else:
        ph, pw = module.padding
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cin, cout = module.in_channels, module.out_channels
    if isinstance(module, nn.Conv2d):
        return n * oh * ow * cout * cin * kh * kw // module.groups
    if isinstance(module, TuckerConv2d):
        r_in, r_out = module.rank
        return n * (h * w * r_in * cin + oh * ow * (r_out * r_in * kh * kw + cout * r_out))
    r = module.rank  # CP: 1x1, vertical (at output rows, input columns), horizontal, 1x1
    return n * (h * w * r * cin + oh * w * r * kh + oh * ow * r * kw + oh * ow * cout * r)


def _rnn_macs_per_step(module):
    """Multiply-adds of one time step of one sequence, all layers and directions (the gate
    nonlinearities not counted)."""
    G = 4 if module.mode == "LSTM" else 3
    D = 2 if module.bidirectional else 1
    H = module.hidden_size
    ranks = getattr(module, "ranks", None) or [(None, None)] * (module.num_layers * D)
    total = 0
    for index, (r_ih, r_hh) in enumerate(ranks):
        cols = module.input_size if index < D else H * D
        for r, c in ((r_ih, cols), (r_hh, H)):
            total += G * H * c if r is None else r * (G * H + c)
    return total


def _first_output(y):
    return y[0] if isinstance(y, tuple) else y


def _relative_error(dense, factorized, x):
    with torch.no_grad():
        if isinstance(x, list):  # sequences or index tensors, as captured
            yd = torch.cat([_first_output(dense(t)).double().flatten() for t in x])
            yf = torch.cat([_first_output(factorized(t)).double().flatten() for t in x])
        else:
            xt = torch.as_tensor(x, dtype=torch.float32)
            yd = dense(xt).double()
            yf = factorized(xt).double()
    denom = float(torch.linalg.vector_norm(yd))
    return float(torch.linalg.vector_norm(yf - yd)) / denom if denom > 0 else 0.0


def _factorize(module, conv_class, criterion, calibration, method):
    if isinstance(module, (nn.LSTM, nn.GRU)):
        return factorize_rnn(module, calibration=calibration, **criterion)
    if isinstance(module, nn.Embedding):
        return factorize_embedding(module, calibration=calibration, **criterion)
    if isinstance(module, nn.Linear):
        return factorize_linear(module, calibration=calibration, **criterion)
    if issubclass(conv_class, TuckerConv2d):
        criterion = dict(criterion, method=method)
    return factorize_conv(module, layer_class=conv_class, calibration=calibration, **criterion)


def _weight_shape(module):
    if isinstance(module, (nn.LSTM, nn.GRU)):
        D = 2 if module.bidirectional else 1
        G = 4 if isinstance(module, nn.LSTM) else 3
        return (
            module.num_layers * D,
            G * module.hidden_size,
            module.input_size,
            module.hidden_size,
        )
    return tuple(module.weight.shape)


def _ratio_kind(module, conv_class):
    if isinstance(module, nn.Linear):
        return "linear"
    return "tucker2" if issubclass(conv_class, TuckerConv2d) else "cp"


def _random_factorized(module, conv_class, rank, precision="fp32"):
    """A factorized module of ``module``'s geometry at ``rank`` with random factors (timing), its
    fused kernel at ``precision`` where the class has it."""
    from .modules import LowRankLinear

    if isinstance(module, nn.Linear):
        m = LowRankLinear(
            module.in_features, module.out_features, rank, bias=module.bias is not None
        )
        return _with_precision(m, precision)[0]
    from .convert import conv_padding

    m = conv_class(
        module.in_channels,
        module.out_channels,
        tuple(module.kernel_size),
        rank,
        stride=tuple(module.stride),
        padding=conv_padding(module),
        dilation=tuple(module.dilation),
        bias=module.bias is not None,
    )
    return _with_precision(m, precision)[0]


def _with_precision(module, precision):
    """``(module, note)``: ``module`` with its fused kernel at ``precision`` when its class has
    kernels for it; else left at fp32 and ``note`` says why (a CPConv2d, an LSTM/GRU, an
    embedding: lrkernels has fp32 kernels only for those), as compress reports it."""
    if precision in module.precisions:
        module.precision = precision
        return module, None
    return module, (
        f"precision={precision!r} requested, but lrkernels.{type(module).__name__} has fp32 "
        "kernels only: the factorized layer runs at fp32"
    )


def _latency_rank(module, conv_class, input_shape, target, t_dense, precision="fp32"):
    """The largest rank on the ratio ladder whose fused layer, timed here at ``input_shape``,
    takes <= target x the dense time; (None, reason) when none does."""
    kind = _ratio_kind(module, conv_class)
    x = torch.randn(input_shape)
    tried, seen = [], set()
    for q in _LATENCY_LADDER:
        try:
            rank = by_ratio(_weight_shape(module), q, kind).rank
        except ValueError:
            break
        if rank in seen:
            continue
        seen.add(rank)
        cand = _random_factorized(module, conv_class, rank, precision)
        cand = cand.eval().requires_grad_(False)
        with torch.no_grad():
            t = time_call(lambda: cand(x))
        tried.append((rank, t))
        # never a factorized form that is not measured faster than dense, whatever the target
        if t <= target * t_dense and t < t_dense:
            return (
                rank,
                (
                    f"largest ratio-ladder rank measured at <= {target:g} x the dense time: "
                    f"{t * 1e6:.0f} us vs dense {t_dense * 1e6:.0f} us (ratio {q:g})"
                ),
                tried,
            )
    best = min(tried, key=lambda rt: rt[1]) if tried else None
    reason = "no rank measured within the latency target"
    if best:
        reason += (
            f" (fastest: rank {best[0]} at {best[1] * 1e6:.0f} us vs dense {t_dense * 1e6:.0f} us)"
        )
    return None, reason, tried


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_criterion_value(criterion):
    """ValueError for a criterion no layer could satisfy (instead of every layer left dense)."""
    ((key, value),) = criterion.items()
    if key == "rank":
        ranks = value if isinstance(value, (tuple, list)) else (value,)
        if (
            not ranks
            or len(ranks) > 2
            or not all(
                isinstance(r, numbers.Integral) and not isinstance(r, bool) and r >= 1
                for r in ranks
            )
        ):
            raise ValueError(f"rank must be a positive int or a pair of them, got {value!r}")
    elif key in ("energy", "ratio", "budget"):
        if not (_is_number(value) and 0 < value <= 1):
            raise ValueError(f"{key} must be a number in (0, 1], got {value!r}")
    elif key == "latency_target":
        if not (_is_number(value) and value > 0):
            raise ValueError(f"latency_target must be a positive number, got {value!r}")


class _Progress:
    def __init__(self, total, enabled):
        self.total, self.enabled, self.start = total, enabled, time.perf_counter()

    def update(self, i, name, what=""):
        if not self.enabled:
            return
        width = 24
        done = int(width * i / max(self.total, 1))
        el = time.perf_counter() - self.start
        sys.stderr.write(
            f"\rcompress [{'#' * done}{'.' * (width - done)}] {i}/{self.total} {el:5.1f}s "
            f"{name[:40]:<40} {what[:30]:<30}"
        )
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# compress
# --------------------------------------------------------------------------------------------


def compress(
    model,
    *,
    rank=None,
    energy=None,
    ratio=None,
    vbmf=False,
    budget=None,
    latency_target=None,
    calibration=None,
    example_inputs=None,
    conv="tucker",
    include=None,
    exclude=(),
    inplace=False,
    fuse=False,
    progress=True,
    measure=True,
    num_threads=None,
    max_calibration_rows=16384,
    max_calibration_batches=64,
    method="hooi",
    fit="sequential",
    allocation=None,
    min_rank=3,
    precision="fp32",
):
    """Factorize the model's nn.Linear and nn.Conv2d layers (and nn.LSTM, nn.GRU, nn.Embedding:
    LowRankLSTM / LowRankGRU with every weight matrix factorized, LowRankEmbedding; by rank=,
    energy=, ratio= or vbmf=True only, their calibration being their input sequences / index
    tensors; budget= and latency_target= leave them dense, with the reason); returns
    ``(model, report)``.

    Exactly one criterion:
      rank=r (an int; (r_in, r_out) for Tucker), energy=e, ratio=q (each layer's parameters
      <= q x dense), vbmf=True: as ``lrkernels.<Kind>.from_dense``, per layer;
      budget=f: the factorized layers together keep <= f x their dense parameters, ranks
      allocated across layers by kept energy per parameter (``lrkernels.rank.allocate_budget``;
      Tucker convolutions);
      latency_target=f: per layer, the most accurate rank (on a ladder of ratios) whose fused
      layer, timed on this machine at the layer's real input shape, takes <= f x the dense torch
      layer's time (and less than it); layers with no such rank stay dense. Needs ``calibration`` or
      ``example_inputs`` for the shapes.
    calibration: an iterable of input batches (a tensor, or a tuple of the model's positional
      arguments; at most ``max_calibration_batches`` are read, and at most
      ``max_calibration_rows`` rows / pixels of each layer's inputs are kept). Each layer's
      inputs are captured on the model as compressed so far and the fit minimizes the layer's
      output error on them (data-aware); the report gives that error.
    fit: with calibration, what each nn.Linear / nn.Conv2d is fitted to. "sequential" (default):
      its own dense output on the inputs it sees in the model compressed so far. "asymmetric"
      (Zhang et al. 2016): the dense model's output of that layer (the dense inputs through the
      dense layer), from the compressed model's inputs, so each layer also corrects the error
      the layers before it left (``lrkernels.torch.asymmetric``; the ridge toward the dense
      weight by cross-validation; the report's error is then against the dense model's output).
      LSTM / GRU / Embedding layers are fitted sequentially either way.
    allocation: how budget= shares the parameters: "sensitivity" (the default with calibration)
      by each layer's output energy on the calibration data, captured on the dense model: the
      spectra allocated are those of W C^(1/2) (linear; C the second moment of the layer's
      inputs) and of the conv weight with its input channels whitened the same way, each
      relative to the layer's own output energy, so ranks go where the data makes them matter;
      "spectrum" (the default without calibration): the weights' own spectra.
    example_inputs: one batch (tensor or tuple) giving the layers' order and input shapes (for
      FLOPs and latency) when there is no calibration; None: module order, no FLOPs/latency.
    conv: "tucker" (TuckerConv2d, the default) or "cp" (CPConv2d) for kxk convolutions; 1x1
      convolutions always become a low-rank channel mix (TuckerConv2d with a 1x1 core).
    include / exclude: module names (exact, prefixes or fnmatch patterns such as "layer4.*") or
      module types; include=None means every nn.Linear and nn.Conv2d.
    inplace: modify ``model`` (default: a deep copy is compressed; the model is left as is).
    fuse: also fold BatchNorms into the factorized layers before them and fuse the following
      ReLU/ReLU6/Hardtanh (see ``lrkernels.torch.fuse``): for inference; the model returned is
      then a torch.fx GraphModule.
    min_rank: a layer whose chosen rank (either rank of a Tucker pair, any matrix of an LSTM)
      falls below it stays dense, with the reason, unless that is the matrix's full rank: energy=,
      ratio=, vbmf=True and latency_target= would otherwise cut small layers (a 4-output box
      regressor, an RGB input side) to rank 1-2, which breaks them (measured on MTCNN,
      BENCHMARKS.md); budget= starts every layer's allocation there instead. An explicit rank= is
      taken as given. 1 disables the floor.
    progress: a progress bar on stderr. measure: time dense and fused layers (needs shapes).
    method: "hooi" (default; iterated, the better fit) or "hosvd" (one SVD per mode: much faster
      on large layers) for Tucker-2 convolutions.
    num_threads: threads for torch, lrkernels and numpy's BLAS during the call (default
      lrkernels.get_num_threads()); latencies are measured at this count.
    precision: "fp32" (default), "fp16" or "int8": the precision of every factorized module's
      fused inference kernel (``module.precision``; lrkernels' fp16-stored weights or int8
      arithmetic). The fits, the parameters and training stay float32; the report's errors,
      latencies and latency_target= timings are of the layers at this precision, and later
      layers are fitted to the inputs the earlier ones give at it. CPConv2d, LowRankLSTM /
      LowRankGRU and LowRankEmbedding have fp32 kernels only: those layers are factorized as
      usual and run at fp32, which their report row says (``precision`` and the reason in
      ``details["precision"]``). Dense layers ``fuse=True`` moves onto lrkernels stay fp32.

    Layers that cannot be factorized (grouped convolutions, non-zero padding modes, ...) or whose
    factorized form would not be smaller stay dense, with the reason in the report. A warning is
    issued for degenerate choices (rank 1-2, or more than 50x fewer parameters).
    """
    criterion = {
        k: v
        for k, v in dict(
            rank=rank,
            energy=energy,
            ratio=ratio,
            vbmf=vbmf or None,
            budget=budget,
            latency_target=latency_target,
        ).items()
        if v is not None
    }
    if len(criterion) != 1:
        raise ValueError(
            "compress: give exactly one of rank=, energy=, ratio=, vbmf=True, budget=, "
            "latency_target=; "
            f"got {sorted(criterion) or 'none'}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"compress needs an nn.Module, got {type(model).__name__}")
    _check_criterion_value(criterion)
    if method not in ("hooi", "hosvd"):
        raise ValueError(f"method must be 'hooi' or 'hosvd', got {method!r}")
    if conv not in ("tucker", "cp"):
        raise ValueError(f"conv must be 'tucker' or 'cp', got {conv!r}")
    check_precision(precision)
    conv_class = TuckerConv2d if conv == "tucker" else CPConv2d
    if not isinstance(min_rank, int) or isinstance(min_rank, bool) or min_rank < 1:
        raise ValueError(f"min_rank must be a positive int, got {min_rank!r}")
    if fit not in ("sequential", "asymmetric"):
        raise ValueError(f"fit must be 'sequential' or 'asymmetric', got {fit!r}")
    if allocation is None:
        allocation = "sensitivity" if calibration is not None else "spectrum"
    if allocation not in ("sensitivity", "spectrum"):
        raise ValueError(f"allocation must be 'sensitivity' or 'spectrum', got {allocation!r}")
    if allocation == "sensitivity" and calibration is None and budget is not None:
        raise ValueError("allocation='sensitivity' needs calibration= (the layers' inputs)")
    if budget is not None:
        if conv == "cp":
            raise ValueError("budget= allocates Tucker-2 ranks; use conv='tucker' or ratio=")
    if latency_target is not None:
        if calibration is None and example_inputs is None:
            raise ValueError(
                "latency_target needs the layers' input shapes: "
                "pass calibration= or example_inputs="
            )
    if num_threads is None:
        num_threads = lrkernels.get_num_threads()
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
    if isinstance(exclude, (str, type)):
        exclude = (exclude,)
    if isinstance(include, (str, type)):
        include = (include,)
    if calibration is not None:
        if isinstance(calibration, torch.Tensor):
            calibration = [calibration]
        # read lazily: a DataLoader is not consumed beyond what the fits use
        calibration = list(itertools.islice(iter(calibration), max_calibration_batches))
        if not calibration:
            raise ValueError("calibration is empty: give at least one input batch")

    start = time.perf_counter()
    if not inplace:
        model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    try:
        with pinned_threads(num_threads):
            rows = _compress(
                model,
                criterion,
                conv_class,
                calibration,
                example_inputs,
                include,
                tuple(exclude),
                progress,
                measure,
                max_calibration_rows,
                method,
                fit,
                allocation,
                min_rank,
                precision,
            )
    finally:
        model.train(was_training)
    settings = dict(criterion, conv=conv, precision=precision)
    if calibration is not None:
        settings["fit"] = fit
    if budget is not None:
        settings["allocation"] = allocation
    report = CompressionReport(rows, settings, num_threads, time.perf_counter() - start)
    degenerate = [
        r.name
        for r in report.layers
        if r.compressed
        and (
            (_min_rank(r.ranks) is not None and _min_rank(r.ranks) <= 2)
            or r.params_before > 50 * r.params_after
        )
    ]
    if degenerate:
        warnings.warn(
            f"compress: {len(degenerate)} layer(s) cut to rank <= 2 or > 50x fewer parameters "
            f"(accuracy will likely suffer): {', '.join(degenerate[:8])}",
            stacklevel=2,
        )
    if fuse:
        from .fuse import fuse as fuse_model

        model = fuse_model(model)
    return model, report


def _compress(
    model,
    criterion,
    conv_class,
    calibration,
    example_inputs,
    include,
    exclude,
    progress,
    measure,
    max_rows,
    method,
    fit="sequential",
    allocation="spectrum",
    min_rank=1,
    precision="fp32",
):
    aliases = {}  # first name -> every name of the same module object
    first_name = {}
    for name, m in model.named_modules(remove_duplicate=False):
        first = first_name.setdefault(id(m), name)
        aliases.setdefault(first, []).append(name)
    modules = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d, *_SEQUENCE_TYPES))
        and not isinstance(m, (FactorizedModule, KernelModule))
        and (include is None or _matches(name, m, include))
        and not _matches(name, m, exclude)
    }
    if not modules:
        raise ValueError(
            "compress: no nn.Linear, nn.Conv2d, nn.LSTM, nn.GRU or nn.Embedding layer selected "
            "(check include=/exclude=)"
        )
    # Shapes (FLOPs, latency) at the example batch when given: a deployment shape, not a
    # calibration batch.
    probe = (
        example_inputs if example_inputs is not None else calibration[0] if calibration else None
    )
    shapes = {}
    order = list(modules)
    if probe is not None:
        ran, shapes = _record_calls(model, modules, probe)
        order = ran + [n for n in modules if n not in shapes]  # layers the probe never reached last

    key, value = next(iter(criterion.items()))
    bar = _Progress(len(order), progress)
    dense_model = copy.deepcopy(model) if fit == "asymmetric" and calibration else None
    allocated = {}
    if key == "budget":
        names = [
            n
            for n in order
            if why_not_factorizable(modules[n]) is None
            and not isinstance(modules[n], _SEQUENCE_TYPES)
        ]
        if names:
            weights = [to_numpy(modules[n].weight) for n in names]
            if allocation == "sensitivity":
                # The model is still dense here: each layer's inputs are the dense model's.
                for j, n in enumerate(names):
                    bar.update(0, n, "measuring sensitivity")
                    X = _capture_inputs(model, modules[n], calibration, max_rows)
                    if X is not None:
                        weights[j] = _whitened(weights[j], X)
            choice = allocate_budget(weights, ratio=value, min_rank=min_rank)
            allocated = dict(zip(names, choice.rank))
            budget_reason = choice.reason
            if allocation == "sensitivity":
                budget_reason = (
                    "by calibration output energy per parameter (sensitivity): " + budget_reason
                )

    rows = []
    for i, name in enumerate(order):
        module = modules[name]
        bar.update(i, name, "")
        shape = shapes.get(name)
        row = LayerReport(
            name=name,
            dense_kind=type(module).__name__,
            kind=type(module).__name__,
            shape=_weight_shape(module),
            input_shape=shape,
            params_before=_params(module),
            params_after=_params(module),
        )
        row.flops_before = row.flops_after = None if shape is None else 2 * _macs(module, shape)
        rows.append(row)
        reason = why_not_factorizable(module)
        if reason:
            row.reason = reason
            continue
        sequence = isinstance(module, _SEQUENCE_TYPES)
        if sequence and key not in _SEQUENCE_CRITERIA:
            row.reason = (
                f"{key}= is not implemented for {type(module).__name__} layers (rank=, energy=, "
                "ratio= or vbmf=True factorize them)"
            )
            continue
        if sequence and key == "rank" and isinstance(module, nn.Embedding):
            if not isinstance(value, int):
                row.reason = f"an nn.Embedding needs an int rank=, got {value!r}"
                continue
        x_timing = None
        if shape is not None:
            x_timing = (
                torch.randint(0, module.num_embeddings, shape)
                if isinstance(module, nn.Embedding)
                else torch.randn(shape)
            )
        t_dense = None
        if x_timing is not None and (measure or key == "latency_target"):
            with torch.no_grad():
                t_dense = time_call(lambda: module(x_timing))
            row.latency_dense_s = t_dense
        layer_criterion = {key: value}
        conv_cls = conv_class
        if isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1):
            conv_cls = TuckerConv2d  # a 1x1 convolution: a low-rank channel mix
        if key == "budget":
            layer_criterion = {"rank": allocated[name]}
        elif key == "latency_target":
            if shape is None:
                row.reason = "not reached by the calibration/example batch: no input shape to time"
                continue
            bar.update(i, name, "timing ranks")
            r, latency_why, tried = _latency_rank(
                module, conv_cls, shape, value, t_dense, precision
            )
            row.details["latency_candidates"] = tried
            if r is None:
                row.reason = latency_why
                continue
            layer_criterion = {"rank": r}
        elif key == "rank" and isinstance(module, nn.Conv2d) and issubclass(conv_cls, CPConv2d):
            if not isinstance(value, int):
                raise ValueError(f"conv='cp' needs an int rank=, got {value!r}")
        calib = calib_dense = None
        fit_module = module
        if calibration is not None:
            bar.update(i, name, "capturing inputs")
            capture = _capture_sequences if sequence else _capture_inputs
            calib = capture(model, module, calibration, max_rows)
            if dense_model is not None and not sequence and calib is not None:
                bar.update(i, name, "asymmetric target")
                calib_dense = _capture_inputs(
                    dense_model, dense_model.get_submodule(name), calibration, max_rows
                )
                try:
                    fit_module, fit_details = asymmetric_target(module, calib_dense, calib)
                    row.details.update(fit_details)
                except ValueError as e:  # the captures do not align (a data-dependent model)
                    row.details["asymmetric"] = f"not applied: {e}"
                    calib_dense = None
        bar.update(i, name, "factorizing")
        try:
            new = _factorize(fit_module, conv_cls, layer_criterion, calib, method)
        except ValueError as e:
            row.reason = str(e)
            continue
        choice = new.rank_choice
        why = choice.reason if choice is not None else ""
        if key == "budget":
            why = f"allocated: {budget_reason}"
        elif key == "latency_target":
            why = latency_why
        collapsed = _collapsed_rank(module, new, min_rank) if key != "rank" else None
        if collapsed:
            row.reason = collapsed
            continue
        new_params = _params(new)
        if new_params >= row.params_before:
            row.reason = (
                f"factorized form would not be smaller ({new_params} >= {row.params_before} "
                "parameters)"
            )
            continue
        new, precision_note = _with_precision(new, precision)
        row.precision = new.precision
        if precision_note:
            row.details["precision"] = precision_note
        new.eval()
        for path in aliases.get(name, (name,)):  # a module reachable under several names
            set_submodule(model, path, new)
        row.kind = type(new).__name__
        row.ranks = new.ranks if isinstance(new, _LowRankRNNBase) else new.rank
        row.reason = why
        row.params_after = new_params
        if shape is not None:
            row.flops_after = 2 * _macs(new, shape)
        if calib_dense is not None:
            row.error = asymmetric_error(module, new, calib_dense, calib)
        elif calib is not None:
            row.error = _relative_error(module, new, calib[: min(len(calib), 256)])
        if x_timing is not None and measure:
            with torch.no_grad():
                row.latency_fused_s = time_call(lambda: new(x_timing))
    bar.update(len(order), "done", "")
    bar.close()
    return rows
