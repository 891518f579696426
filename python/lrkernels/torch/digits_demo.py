"""The end-to-end example (``python -m lrkernels demo --model``): a small CNN trained on
scikit-learn's bundled digits (offline), compressed at several levels, fine-tuned, with the level
chosen by k-fold cross-validation on the training set, then checked on held-out test images and
timed dense vs compressed on the fused kernels.

Needs torch and scikit-learn (``pip install "lrkernels[torch,demo]"``); matplotlib for --plot.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lrkernels

from .compress import pinned_threads, time_call
from .serialize import load, save
from .sweep import sweep


class DigitsCNN(nn.Module):
    """8x8 grey digits -> 10 classes: three conv-BN-ReLU blocks and two linear layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.fc1 = nn.Linear(128 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # 4x4
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.adaptive_avg_pool2d(x, 2).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def load_digits_tensors(seed=0, test_fraction=0.25):
    """(x_train, y_train, x_test, y_test): scikit-learn's 1797 digits as (N, 1, 8, 8) float32
    in [0, 1], a stratified held-out test split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise ImportError("the model demo needs scikit-learn: pip install 'lrkernels[demo]'") from e
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(
        x, d.target, test_size=test_fraction, random_state=seed, stratify=d.target
    )
    t = torch.from_numpy
    return t(xtr), t(ytr).long(), t(xte), t(yte).long()


def train(model, x, y, epochs, lr=3e-3, seed=0, batch=64):
    """Adam on cross-entropy, mini-batches, light shift augmentation; in place."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, max(1, epochs * ((len(x) + batch - 1) // batch))
    )
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            xb = x[idx]
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dx, dy), dims=(2, 3))
            opt.zero_grad()
            F.cross_entropy(model(xb), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def conv_fc_params(model):
    """Parameters of the conv and linear layers (dense or factorized), biases included."""
    from .modules import FactorizedModule

    return sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, FactorizedModule))
        for p in m.parameters(recurse=False)
    )


def run(
    levels=(0.5, 0.3, 0.2, 0.12),
    folds=3,
    epochs=30,
    finetune_epochs=8,
    tolerance=0.01,
    threads=None,
    plot=None,
    seed=0,
    out=print,
):
    """The demo; returns a dict of the figures it printed."""
    torch.manual_seed(seed)
    threads = threads or lrkernels.get_num_threads()
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = load_digits_tensors(seed)
    with pinned_threads(threads):
        out(
            f"digits: {len(xtr)} training / {len(xte)} held-out test images (8x8), "
            f"{threads} thread(s) for torch and lrkernels"
        )
        dense = train(DigitsCNN(), xtr, ytr, epochs, seed=seed)
        dense_acc = accuracy(dense, xte, yte)
        out(
            f"dense CNN: test accuracy {dense_acc:.4f}, {conv_fc_params(dense)} conv+FC parameters "
            f"({time.perf_counter() - t0:.0f} s)"
        )

        # k-fold cross-validation on the training set chooses the level
        fold_of = torch.arange(len(xtr)) % folds
        fold_of = fold_of[torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))]

        def evaluate(m, fold):
            sel = fold_of == fold
            return accuracy(m, xtr[sel], ytr[sel])

        def finetune(m, fold):
            sel = fold_of != fold
            train(m, xtr[sel], ytr[sel], finetune_epochs, lr=1e-3, seed=seed + fold)

        calibration = [xtr[i : i + 128] for i in range(0, 512, 128)]
        out(
            f"sweep: budget levels {list(levels)} (fraction of the conv+FC weights kept), "
            f"{folds}-fold cross-validation, {finetune_epochs} fine-tuning epochs per fold"
        )
        result = sweep(
            dense,
            levels,
            evaluate,
            finetune,
            folds=folds,
            criterion="budget",
            example_inputs=xte[:1],
            calibration=calibration,
            num_threads=threads,
            progress=False,
        )
        out(str(result))
        try:
            best = result.best(tolerance)
            why = f"the smallest within {tolerance:.3f} of the dense CV accuracy"
        except ValueError:
            best = max(result.rows[1:], key=lambda r: r.final_score)
            why = f"none within {tolerance:.3f}: the most accurate"
        out(f"chosen by cross-validation: budget={best.level} ({why})")

        model, report = lrkernels.torch.compress(
            dense,
            budget=best.level,
            calibration=calibration,
            example_inputs=xte[:1],
            progress=False,
        )
        out(str(report))
        before = accuracy(model, xte, yte)
        train(model, xtr, ytr, finetune_epochs, lr=1e-3, seed=seed)
        after = accuracy(model, xte, yte)
        fused = lrkernels.torch.fuse(model)
        fused_acc = accuracy(fused, xte, yte)
        x1 = xte[:1]
        with torch.no_grad():
            t_dense = time_call(lambda: dense(x1), budget_s=0.3)
            t_comp = time_call(lambda: fused(x1), budget_s=0.3)
        pd, pc = conv_fc_params(dense), conv_fc_params(model)
        out(
            f"held-out test accuracy: dense {dense_acc:.4f}; compressed {before:.4f} -> "
            f"{after:.4f} after fine-tuning ({fused_acc:.4f} with BN folded and ReLU fused)"
        )
        out(f"conv+FC parameters: {pd} -> {pc} ({pd / pc:.2f}x fewer)")
        out(
            f"latency, batch 1, {threads} thread(s): dense torch {t_dense * 1e3:.3f} ms, "
            f"compressed on lrkernels {t_comp * 1e3:.3f} ms ({t_dense / t_comp:.2f}x)"
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "digits.lrk")
            save(fused, path)
            reloaded = load(DigitsCNN(), path)
            same = accuracy(reloaded, xte, yte)
            out(
                f"saved without pickle ({os.path.getsize(path) / 1024:.0f} KiB) and reloaded "
                f"into a fresh DigitsCNN: test accuracy {same:.4f}; lrkernels.load_layers "
                "reads it without torch"
            )
        if plot:
            result.plot(plot)
            out(f"trade-off plot: {plot}")
    out(f"total {time.perf_counter() - t0:.0f} s")
    return dict(
        dense_acc=dense_acc,
        compressed_acc=after,
        fused_acc=fused_acc,
        reloaded_acc=same,
        params_dense=pd,
        params_compressed=pc,
        t_dense=t_dense,
        t_compressed=t_comp,
        level=best.level,
        sweep=result,
        model=copy.deepcopy(fused),
    )
