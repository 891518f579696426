"""``sweep``: the compression / accuracy / speed trade-off of a model, with the level chosen by
validation (optionally k-fold cross-validation) after optional fine-tuning."""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

import lrkernels

from .compress import compress, pinned_threads, time_call

__all__ = ["SweepResult", "SweepRow", "sweep"]


@dataclass
class SweepRow:
    """One level of a sweep (level None: the dense model)."""

    level: object
    compress_kwargs: dict
    params: int  # the whole model's parameters
    flops: int | None  # of its nn.Linear/nn.Conv2d layers at the example shape
    latency_s: float | None  # the whole model on ``example_inputs``, measured here
    score: float  # evaluate() after compression (mean over folds)
    score_finetuned: float | None = None  # after finetune() (mean over folds)
    fold_scores: list = field(default_factory=list)  # (score, finetuned) per fold
    report: object = None  # the CompressionReport
    model: object = None  # with keep_models=True

    @property
    def final_score(self) -> float:
        return self.score if self.score_finetuned is None else self.score_finetuned


@dataclass
class SweepResult:
    """The rows of a sweep, the dense model first; ``print(result)``, ``best(tolerance)``,
    ``plot(path)``."""

    rows: list
    criterion: str
    num_threads: int

    @property
    def dense(self) -> SweepRow:
        return self.rows[0]

    def best(self, tolerance: float) -> SweepRow:
        """The level with the fewest parameters whose (fine-tuned) score is within
        ``tolerance`` of the dense model's (higher scores are better); ValueError if none is."""
        if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
            raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
        ok = [
            r
            for r in self.rows[1:]
            if r.final_score >= self.dense.final_score - tolerance and r.params < self.dense.params
        ]  # a level that compressed nothing is no choice
        if not ok:
            raise ValueError(
                "no level scores within "
                f"{tolerance} of the dense model's {self.dense.final_score:.4g}"
            )
        return min(ok, key=lambda r: (r.params, r.latency_s or 0.0))

    def __str__(self) -> str:
        d = self.dense
        cols = (("level", 10), ("params", 10), ("x fewer", 8), ("MFLOPs", 9), ("ms", 8))
        cols += (("x faster", 8), ("score", 8), ("tuned", 8))
        head = " ".join(f"{c:>{w}}" for c, w in cols)
        lines = [head]
        for r in self.rows:
            lv = (
                "dense"
                if r.level is None
                else f"{r.level:g}"
                if isinstance(r.level, float)
                else str(r.level)
            )
            lv = lv if len(lv) <= 10 else lv[:9] + "~"  # dict levels: the table stays aligned
            fl = "-" if r.flops is None else f"{r.flops / 1e6:.1f}"
            ms = "-" if r.latency_s is None else f"{r.latency_s * 1e3:.3f}"
            sp = (
                "-"
                if (r.latency_s is None or d.latency_s is None)
                else f"{d.latency_s / r.latency_s:.2f}"
            )
            tu = "-" if r.score_finetuned is None else f"{r.score_finetuned:.4f}"
            lines.append(
                f"{lv:>10} {r.params:>10} {d.params / r.params:>8.2f} {fl:>9} {ms:>8} {sp:>8} "
                f"{r.score:>8.4f} {tu:>8}"
            )
        lines.append(f"criterion: {self.criterion}; {self.num_threads} thread(s)")
        return "\n".join(lines)

    __repr__ = __str__

    def plot(self, path):
        """Save the trade-off as a picture: score vs parameters and score vs latency (needs
        matplotlib: pip install 'lrkernels[plot]')."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as e:
            raise ImportError(
                "SweepResult.plot needs matplotlib: pip install 'lrkernels[plot]'"
            ) from e
        # a Figure of its own: pyplot's global backend (a notebook's) is left alone
        fig = Figure(figsize=(10, 4))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2)
        rows = self.rows
        for ax, xs, xlabel in (
            (axes[0], [r.params for r in rows], "parameters"),
            (axes[1], [(r.latency_s or math.nan) * 1e3 for r in rows], "latency (ms, measured)"),
        ):
            ax.plot(xs[1:], [r.score for r in rows[1:]], "o--", label="compressed")
            if any(r.score_finetuned is not None for r in rows[1:]):
                ax.plot(xs[1:], [r.final_score for r in rows[1:]], "o-", label="fine-tuned")
            ax.axhline(self.dense.final_score, color="k", lw=0.8, label="dense")
            for x, r in zip(xs[1:], rows[1:]):
                ax.annotate(f"{r.level}", (x, r.final_score), fontsize=7)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("score")
            ax.legend()
        fig.suptitle(f"lrkernels sweep ({self.criterion}, {self.num_threads} thread(s))")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return path


def _count_params(model):
    return sum(p.numel() for p in model.parameters())


def _latency(model, example_inputs):
    if example_inputs is None:
        return None
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    model.eval()
    with torch.no_grad():
        return time_call(lambda: model(*args), budget_s=0.2)


def sweep(
    model,
    levels,
    evaluate,
    finetune=None,
    folds=None,
    *,
    criterion="ratio",
    example_inputs=None,
    num_threads=None,
    keep_models=False,
    progress=True,
    **compress_kwargs,
):
    """Compress ``model`` at each level, optionally fine-tune, score; returns a SweepResult.

    levels: values of ``criterion`` (default "ratio": each layer's parameter fraction; any
      compress criterion name: "budget", "energy", "rank", "latency_target"), or dicts of
      compress keyword arguments.
    evaluate(model) -> float, higher is better (e.g. validation accuracy); with folds=k it is
      called as evaluate(model, fold) for fold in range(k).
    finetune(model) trains the compressed model in place (optional); with folds=k,
      finetune(model, fold) trains on every fold but ``fold``. Each fold fine-tunes its own copy.
    folds: None (one validation set) or k >= 2 (k-fold cross-validation; scores are means).
    example_inputs: a batch for measuring the whole model's latency (eval, no_grad, fused
      kernels, ``num_threads`` threads) and the FLOPs.
    compress_kwargs: passed to every compress call (calibration=, conv=, exclude=, ...).
    """
    if folds is not None and (not isinstance(folds, int) or folds < 2):
        raise ValueError(f"folds must be None or an int >= 2, got {folds!r}")
    levels = list(levels)
    if not levels:
        raise ValueError("levels is empty")
    if not callable(evaluate) or (finetune is not None and not callable(finetune)):
        raise TypeError("evaluate (and finetune, if given) must be callables")
    num_threads = num_threads or lrkernels.get_num_threads()
    fold_ids = [None] if folds is None else list(range(folds))

    def call(fn, m, fold):
        return fn(m) if fold is None else fn(m, fold)

    def score_of(m, tune):
        per_fold = []
        for fold in fold_ids:
            mm = copy.deepcopy(m) if tune else m
            s0 = float(call(evaluate, mm, fold))
            s1 = None
            if tune:
                mm.train()
                call(finetune, mm, fold)
                mm.eval()
                s1 = float(call(evaluate, mm, fold))
            per_fold.append((s0, s1))
        s0 = float(np.mean([p[0] for p in per_fold]))
        s1 = None if not tune else float(np.mean([p[1] for p in per_fold]))
        return s0, s1, per_fold

    was_training = model.training
    with pinned_threads(num_threads):
        model.eval()
        s0, _, per_fold = score_of(model, False)
        dense = SweepRow(
            None,
            {},
            _count_params(model),
            None,
            _latency(model, example_inputs),
            s0,
            None,
            per_fold,
        )
        rows = [dense]
        for i, level in enumerate(levels):
            kw = dict(level) if isinstance(level, dict) else {criterion: level}
            kw = {**compress_kwargs, **kw}
            if progress:
                sys.stderr.write(f"sweep {i + 1}/{len(levels)}: {kw}\n")
            cm, report = compress(
                model,
                example_inputs=kw.pop("example_inputs", example_inputs),
                num_threads=num_threads,
                progress=progress,
                **kw,
            )
            cm.eval()
            s0, s1, per_fold = score_of(cm, finetune is not None)
            params = _count_params(cm)
            row = SweepRow(
                level,
                kw,
                params,
                report.flops_after,
                _latency(cm, example_inputs),
                s0,
                s1,
                per_fold,
                report,
                cm if keep_models else None,
            )
            if dense.flops is None and report.flops_before is not None:
                dense.flops = report.flops_before
            rows.append(row)
    model.train(was_training)
    return SweepResult(rows, criterion, num_threads)
