"""compress(fit="asymmetric") and budget= allocated by calibration sensitivity (issue 15, 3-4)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import lrkernels.torch as lt  # noqa: E402
from lrkernels.torch.asymmetric import asymmetric_target  # noqa: E402


def test_asymmetric_target_is_the_dense_weight_when_inputs_agree():
    torch.manual_seed(0)
    lin = nn.Linear(12, 7)
    X = np.random.default_rng(0).standard_normal((400, 12))
    target, details = asymmetric_target(lin, X, X)
    np.testing.assert_allclose(
        target.weight.detach().numpy(), lin.weight.detach().numpy(), atol=1e-5
    )
    assert torch.equal(target.bias, lin.bias) and details["asymmetric_rows"] == 400
    conv = nn.Conv2d(3, 5, 3, padding=1)
    imgs = np.random.default_rng(1).standard_normal((6, 3, 9, 9))
    target, _ = asymmetric_target(conv, imgs, imgs)
    np.testing.assert_allclose(
        target.weight.detach().numpy(), conv.weight.detach().numpy(), atol=1e-4
    )


def test_asymmetric_target_undoes_a_distortion_of_its_inputs():
    """Inputs X_c = X_d M (the error of earlier layers): W_eff maps X_c to the dense output."""
    rng = np.random.default_rng(2)
    lin = nn.Linear(10, 6, bias=False)
    Xd = rng.standard_normal((2000, 10))
    M = np.eye(10) + 0.3 * rng.standard_normal((10, 10))
    Xc = Xd @ M
    target, _ = asymmetric_target(lin, Xd, Xc)
    W = lin.weight.detach().double().numpy()
    W_eff = target.weight.detach().double().numpy()
    before = np.linalg.norm(Xc @ W.T - Xd @ W.T)
    after = np.linalg.norm(Xc @ W_eff.T - Xd @ W.T)
    assert after < 0.05 * before


def test_compress_asymmetric_fits_to_the_dense_model():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(32, 48), nn.Tanh(), nn.Linear(48, 48), nn.Tanh(), nn.Linear(48, 8)
    ).eval()
    basis = torch.randn(10, 32)
    cal = [torch.randn(128, 10) @ basis + 0.05 * torch.randn(128, 32) for _ in range(6)]
    test = torch.randn(512, 10) @ basis + 0.05 * torch.randn(512, 32)
    with torch.no_grad():
        ref = model(test)
    errors = {}
    for fit in ("sequential", "asymmetric"):
        small, report = lt.compress(model, rank=6, calibration=cal, fit=fit, progress=False)
        assert report.criterion["fit"] == fit
        with torch.no_grad():
            errors[fit] = float((small(test) - ref).norm() / ref.norm())
        if fit == "asymmetric":
            assert report["2"].details["asymmetric_reg"] in (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
            assert all(r.error is not None for r in report.layers)
    # the later layers correct what the earlier ones left: not worse than the sequential fit
    assert errors["asymmetric"] <= 1.02 * errors["sequential"]


def test_budget_allocation_by_sensitivity_follows_the_data():
    """Layer a sees inputs in a 3-dimensional subspace: its output needs ~3 ranks whatever its
    weight spectrum says; the sensitivity allocation gives the parameters to layer b instead."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(40, 40), nn.Linear(40, 40)).eval()
    basis = torch.randn(3, 40)
    cal = [torch.randn(256, 3) @ basis for _ in range(4)]
    _, by_spectrum = lt.compress(
        model, budget=0.4, calibration=cal, allocation="spectrum", progress=False
    )
    _, by_data = lt.compress(model, budget=0.4, calibration=cal, progress=False)
    assert by_data["0"].ranks < by_spectrum["0"].ranks
    assert by_data["1"].ranks > by_spectrum["1"].ranks
    assert "sensitivity" in by_data["0"].reason


def test_bad_options():
    model = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(ValueError, match="fit must be"):
        lt.compress(model, rank=2, fit="other", progress=False)
    with pytest.raises(ValueError, match="allocation must be"):
        lt.compress(model, budget=0.5, allocation="x", progress=False)
    with pytest.raises(ValueError, match="needs calibration"):
        lt.compress(model, budget=0.5, allocation="sensitivity", progress=False)
