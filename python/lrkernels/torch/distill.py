"""``distill(student, teacher, batches)``: fine-tune a compressed model on the dense model's
outputs, from unlabeled inputs (knowledge distillation; for users without the training set).

The teacher (the dense model) runs under ``torch.no_grad`` in eval mode; the student is trained in
place, in train mode (restored afterwards), with Adam by default. Its factorized modules run torch
ops while training (autograd) and the fused kernels again at inference: their packed weights
follow the optimizer's steps (see ``lrkernels.torch`` modules).
"""

from __future__ import annotations

import copy
import itertools
import math
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .compress import _as_args

__all__ = ["DistillResult", "distill"]

_LOSSES = ("mse", "kl", "cosine")


@dataclass
class DistillResult:
    """What a ``distill`` run did: the loss of every step, and the mean loss on ``held_out``
    before and after (None without held-out batches)."""

    losses: list = field(default_factory=list)
    epochs: int = 0
    steps: int = 0
    held_out_before: float | None = None
    held_out_after: float | None = None
    best_epoch: int | None = None  # with held_out: the epoch kept (0: the student as it came)
    seconds: float = 0.0

    def __str__(self) -> str:
        text = f"distill: {self.steps} steps over {self.epochs} epoch(s) in {self.seconds:.1f} s"
        if self.losses:
            k = max(1, len(self.losses) // 10)
            first = sum(self.losses[:k]) / k
            last = sum(self.losses[-k:]) / k
            text += f"; training loss {first:.4g} -> {last:.4g}"
        if self.held_out_before is not None:
            text += f"; held-out loss {self.held_out_before:.4g} -> {self.held_out_after:.4g}"
            text += f" (kept the state after epoch {self.best_epoch})"
        return text


def _tensors(output, select):
    """The tensors of a model output to match: ``select(output)`` when given, else the output
    itself, every tensor of a tuple/list, or every tensor value of a dict."""
    if select is not None:
        output = select(output)
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        found = []
        for item in output:
            found += (
                _tensors(item, None)
                if isinstance(item, (tuple, list, dict))
                else ([item] if isinstance(item, torch.Tensor) else [])
            )
        if found:
            return found
    raise TypeError(
        f"distill: the model output is a {type(output).__name__} with no tensor to match; pass "
        "output=lambda y: ... to pick the tensor(s)"
    )


def _loss_fn(loss, temperature):
    if callable(loss):
        return loss
    if loss == "mse":
        return lambda s, t: F.mse_loss(s, t)
    if loss == "cosine":  # features whose direction matters (embeddings)
        return lambda s, t: (1 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1)).mean()
    if loss == "kl":  # logits: KL(teacher || student) at a temperature (Hinton et al. 2015)
        T = temperature

        def kl(s, t):
            return F.kl_div(
                F.log_softmax(s / T, dim=-1),
                F.log_softmax(t / T, dim=-1),
                log_target=True,
                reduction="batchmean",
            ) * (T * T)

        return kl
    raise ValueError(f"loss must be one of {_LOSSES} or a callable, got {loss!r}")


def _batch_loss(student, teacher, batch, loss_fn, select):
    args = _as_args(batch)
    with torch.no_grad():
        targets = _tensors(teacher(*args), select)
    outputs = _tensors(student(*args), select)
    if len(outputs) != len(targets):
        raise ValueError(
            f"distill: the student gives {len(outputs)} output tensor(s), the teacher "
            f"{len(targets)}"
        )
    total = 0.0
    for s, t in zip(outputs, targets):
        if s.shape != t.shape:
            raise ValueError(
                f"distill: student output of shape {tuple(s.shape)} vs teacher output of shape "
                f"{tuple(t.shape)}"
            )
        total = total + loss_fn(s.float(), t.float())
    return total


def _held_out_loss(student, teacher, batches, loss_fn, select):
    if batches is None:
        return None
    was = student.training
    student.eval()
    try:
        with torch.no_grad():
            losses = [float(_batch_loss(student, teacher, b, loss_fn, select)) for b in batches]
    finally:
        student.train(was)
    return sum(losses) / len(losses) if losses else None


def distill(
    student,
    teacher,
    batches,
    *,
    epochs=1,
    lr=1e-4,
    loss="mse",
    temperature=2.0,
    optimizer=None,
    held_out=None,
    output=None,
    max_steps=None,
    train_mode=True,
    restore_best=True,
    progress=True,
):
    """Fine-tune ``student`` in place to reproduce ``teacher``'s outputs on ``batches`` (an
    iterable of input tensors, or tuples of the models' positional arguments; no labels).

    loss: "mse" (features or logits, the default), "kl" (logits: KL divergence of the softened
    distributions at ``temperature``, times temperature^2), "cosine" (1 - cosine similarity per
    sample: embeddings), or a callable ``loss(student_out, teacher_out) -> scalar``. output: a
    callable picking the tensor(s) to match from a model output (default: the output, or every
    tensor of a tuple/list/dict). optimizer: default ``torch.optim.Adam(student.parameters(),
    lr)``. held_out: batches scored (mean loss, eval mode) before training and after every
    epoch; with restore_best (the default) the student ends in the state with the lowest
    held-out loss, its state before training included, so distillation never leaves it worse on
    those batches (a nearly exact student can otherwise drift: measured on Silero VAD and MTCNN,
    BENCHMARKS.md). max_steps: stop
    after that many optimizer steps. train_mode: the student's mode while training (False keeps
    eval mode: BatchNorm statistics and dropout unchanged). Returns a DistillResult.
    """
    if not isinstance(student, nn.Module) or not isinstance(teacher, nn.Module):
        raise TypeError(
            f"distill needs two nn.Modules, got {type(student).__name__} and "
            f"{type(teacher).__name__}"
        )
    if student is teacher:
        raise ValueError("distill: student and teacher are the same module")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    loss_fn = _loss_fn(loss, temperature)
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    if iter(batches) is batches:  # a one-shot iterator: keep the batches for every epoch
        batches = list(batches)
    if held_out is not None:
        held_out = [held_out] if isinstance(held_out, torch.Tensor) else list(held_out)
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ValueError("distill: the student has no parameter that requires grad")
    if optimizer is None:
        optimizer = torch.optim.Adam(params, lr=lr)

    result = DistillResult()
    start = time.perf_counter()
    teacher_was, student_was = teacher.training, student.training
    teacher.eval()
    try:
        result.held_out_before = _held_out_loss(student, teacher, held_out, loss_fn, output)
        best = None
        if held_out is not None and result.held_out_before is not None and restore_best:
            best = (result.held_out_before, 0, copy.deepcopy(student.state_dict()))
        student.train(train_mode)
        steps = itertools.count()
        done = False
        for epoch in range(epochs):
            count = 0
            for batch in batches:
                step = next(steps)
                if max_steps is not None and step >= max_steps:
                    done = True
                    break
                optimizer.zero_grad(set_to_none=True)
                value = _batch_loss(student, teacher, batch, loss_fn, output)
                scalar = float(value.detach())
                if not math.isfinite(scalar):
                    raise FloatingPointError(
                        f"distill: the loss is {scalar} at step {step} (lower lr=)"
                    )
                value.backward()
                optimizer.step()
                result.losses.append(scalar)
                count += 1
                if progress:
                    print(
                        f"\rdistill: epoch {epoch + 1}/{epochs} step {count} loss {scalar:.4g}",
                        end="",
                        file=sys.stderr,
                    )
            if count == 0 and not done:
                raise ValueError("distill: batches is empty")
            result.epochs = epoch + 1
            if best is not None and count:
                loss_now = _held_out_loss(student, teacher, held_out, loss_fn, output)
                if loss_now < best[0]:
                    best = (loss_now, epoch + 1, copy.deepcopy(student.state_dict()))
            if done:
                break
        if progress:
            print(file=sys.stderr)
        result.steps = len(result.losses)
        if best is not None:
            if best[1] != result.epochs:
                student.load_state_dict(best[2])
            result.best_epoch = best[1]
        result.held_out_after = _held_out_loss(student, teacher, held_out, loss_fn, output)
    finally:
        teacher.train(teacher_was)
        student.train(student_was)
    result.seconds = time.perf_counter() - start
    return result
