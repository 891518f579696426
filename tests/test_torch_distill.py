"""lrkernels.torch.distill: fine-tuning a compressed model on the dense model's outputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import lrkernels.torch as lt  # noqa: E402


def _models(seed=0):
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(24, 48), nn.ReLU(), nn.Linear(48, 6)).eval()
    student, _ = lt.compress(teacher, rank=3, progress=False)
    batches = [torch.randn(32, 24) for _ in range(12)]
    return teacher, student, batches


def test_distill_lowers_held_out_loss_and_the_fused_path_follows():
    teacher, student, batches = _models()
    result = lt.distill(
        student, teacher, batches[:10], epochs=4, lr=3e-3, held_out=batches[10:], progress=False
    )
    assert result.steps == 40 and result.epochs == 4 and len(result.losses) == 40
    assert result.held_out_after < 0.9 * result.held_out_before
    assert "held-out loss" in str(result) and result.best_epoch == 4
    x = batches[11]
    with torch.no_grad():
        fused = student(x)  # eval, no grad: the lrkernels kernels
        for m in student.modules():
            if isinstance(m, lt.FactorizedModule):
                m.use_kernels = False
        ops = student(x)
    torch.testing.assert_close(fused, ops, atol=1e-5, rtol=1e-4)
    assert not student.training and not teacher.training  # modes restored


@pytest.mark.parametrize("loss", ["kl", "cosine", lambda s, t: (s - t).abs().mean()])
def test_other_losses_and_one_shot_iterators(loss):
    teacher, student, batches = _models(1)
    result = lt.distill(
        student, teacher, (b for b in batches), epochs=2, loss=loss, lr=1e-3, progress=False
    )
    assert result.steps == 2 * len(batches)


def test_tuple_outputs_and_max_steps():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 16)
            self.b = nn.Linear(16, 4)

        def forward(self, x):
            h = self.a(x)
            return h, self.b(torch.relu(h))

    torch.manual_seed(2)
    teacher = Two().eval()
    student, _ = lt.compress(teacher, rank=3, progress=False)
    batches = [torch.randn(4, 8) for _ in range(5)]
    result = lt.distill(student, teacher, batches, epochs=3, max_steps=7, progress=False)
    assert result.steps == 7
    only_logits = lt.distill(student, teacher, batches, output=lambda y: y[1], progress=False)
    assert only_logits.steps == 5


def test_train_mode_false_keeps_batchnorm_statistics():
    torch.manual_seed(3)
    teacher = nn.Sequential(nn.Conv2d(16, 16, 3), nn.BatchNorm2d(16), nn.ReLU()).eval()
    student, _ = lt.compress(teacher, rank=(6, 6), progress=False)
    before = student[1].running_mean.clone()
    lt.distill(student, teacher, [torch.randn(2, 16, 8, 8)], train_mode=False, progress=False)
    assert torch.equal(student[1].running_mean, before)


def test_the_best_held_out_state_is_kept():
    """A student that is already exact: any step makes it worse on held-out data, so the state
    before training comes back (restore_best)."""
    torch.manual_seed(5)
    teacher = nn.Sequential(nn.Linear(6, 6)).eval()
    student = lt.LowRankLinear.from_linear(teacher[0], rank=6)
    student = nn.Sequential(student)
    before = [p.detach().clone() for p in student.parameters()]
    batches = [torch.randn(8, 6) for _ in range(4)]
    result = lt.distill(
        student, teacher, batches, epochs=2, lr=1e-1, held_out=batches[:2], progress=False
    )
    assert result.best_epoch == 0 and result.held_out_after == result.held_out_before
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters()))
    kept = lt.distill(
        student, teacher, batches, lr=1e-1, held_out=batches[:2], restore_best=False, progress=False
    )
    assert kept.held_out_after > kept.held_out_before


def test_bad_arguments():
    teacher, student, batches = _models()
    with pytest.raises(ValueError, match="same module"):
        lt.distill(teacher, teacher, batches, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        lt.distill(student, teacher, batches, epochs=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        lt.distill(student, teacher, batches, lr=float("nan"), progress=False)
    with pytest.raises(ValueError, match="loss must be"):
        lt.distill(student, teacher, batches, loss="l1", progress=False)
    with pytest.raises(ValueError, match="empty"):
        lt.distill(student, teacher, [], progress=False)
    with pytest.raises(TypeError, match="nn.Modules"):
        lt.distill(student, lambda x: x, batches, progress=False)
    with pytest.raises(ValueError, match="shape"):
        lt.distill(student, nn.Linear(24, 5), batches, progress=False)
