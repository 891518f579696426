"""lrkernels.torch.compress / fuse / sweep on small models. Skipped without torch."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import lrkernels.torch as lt  # noqa: E402

# conv1 (3 input channels) legitimately gets a tiny rank at most levels; the warning is tested
# on its own below.
pytestmark = pytest.mark.filterwarnings("ignore:compress.*rank <= 2")


class SmallNet(nn.Module):
    """conv-BN-ReLU blocks, a depthwise conv (left dense), a 1x1, a classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()  # shared by two blocks, as torchvision's ResNet does
        self.conv2 = nn.Conv2d(24, 32, 3, padding=1, stride=2, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pw = nn.Conv2d(32, 32, 1)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.act(self.pw(self.dw(x)))
        return self.fc(x.mean((2, 3)))


def _net(seed=0):
    torch.manual_seed(seed)
    net = SmallNet()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return net.eval()


def _calibration(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 12, 12, generator=g) for _ in range(n)]


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_compress_ratio_replaces_layers_and_reports():
    net = _net()
    cal = _calibration()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, report = lt.compress(net, ratio=0.5, calibration=cal, progress=False)
    # conv1 has 3 input channels: ratio=0.5 would cut r_in to 1-2 of 3, so it stays dense
    # (min_rank=3); with the floor off it is factorized
    assert isinstance(model.conv1, nn.Conv2d) and "min_rank=3" in report["conv1"].reason
    assert isinstance(model.conv2, lt.TuckerConv2d)
    assert isinstance(model.pw, lt.TuckerConv2d) and model.pw.kernel_size == (1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        floorless, _ = lt.compress(net, ratio=0.5, calibration=cal, progress=False, min_rank=1)
    assert isinstance(floorless.conv1, lt.TuckerConv2d)
    assert isinstance(model.fc, lt.LowRankLinear)
    assert isinstance(model.dw, nn.Conv2d) and "groups=32" in report["dw"].reason
    assert isinstance(net.conv1, nn.Conv2d)  # not in place: the original is untouched
    assert [r.name for r in report.layers] == ["conv1", "conv2", "dw", "pw", "fc"]  # run order
    for r in report.layers:
        if r.compressed:
            assert r.params_after <= 0.5 * r.params_before + 1
            assert r.error is not None and 0 <= r.error < 1
            assert r.flops_after < r.flops_before
            assert r.latency_dense_s > 0 and r.latency_fused_s > 0
            assert r.reason
    assert report.params_after < report.params_before
    text = str(report)
    assert "conv2" in text and "left dense" in text and "total" in text
    d = report.to_dict()
    assert d["layers"][0]["name"] == "conv1"
    x = cal[0]
    with torch.no_grad():
        assert _rel(model(x), net(x)) < 0.5


def test_compress_in_place():
    net = _net()
    model, report = lt.compress(net, ratio=0.99, inplace=True, progress=False, include=["fc"])
    assert model is net
    assert isinstance(net.fc, lt.LowRankLinear)
    assert [r.name for r in report.layers] == ["fc"]


def test_compress_include_exclude_patterns_and_types():
    net = _net()
    _, report = lt.compress(net, ratio=0.5, include=["conv*"], exclude=["conv1"], progress=False)
    assert [r.name for r in report.layers] == ["conv2"]
    _, report = lt.compress(net, ratio=0.5, include=[nn.Linear], progress=False)
    assert [r.name for r in report.layers] == ["fc"]
    with pytest.raises(ValueError, match="no nn.Linear"):
        lt.compress(net, ratio=0.5, include=["nothing"], progress=False)


def test_compress_budget_keeps_the_total_fraction():
    net = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small layer may get rank <= 2
        model, report = lt.compress(net, budget=0.3, exclude=["dw"], progress=False)
    weights = sum(r.shape[0] * int(np.prod(r.shape[1:])) for r in report.layers if r.compressed)
    factor_params = sum(r.params_after for r in report.layers if r.compressed)
    biases = sum(r.shape[0] for r in report.layers if r.compressed and r.name != "conv2")
    assert factor_params - biases <= 0.3 * weights
    assert all("allocated" in r.reason for r in report.layers if r.compressed)


def test_min_rank_keeps_small_layers_dense_instead_of_collapsing():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    small, report = lt.compress(model, ratio=0.3, progress=False)
    assert isinstance(small[0], lt.LowRankLinear) and small[0].rank >= 3
    assert isinstance(small[2], nn.Linear) and "rank 1 of 4" in report["2"].reason
    with pytest.warns(UserWarning, match="rank <= 2"):
        _, floorless = lt.compress(model, ratio=0.3, progress=False, min_rank=1)
    assert floorless["2"].ranks == 1
    explicit, _ = lt.compress(model, rank=2, progress=False, include=["2"])
    assert explicit[2].rank == 2  # an explicit rank= is taken as given
    _, budget = lt.compress(model, budget=0.3, progress=False)
    assert all(r.ranks is None or r.ranks >= 3 for r in budget.layers)
    with pytest.raises(ValueError, match="min_rank"):
        lt.compress(model, ratio=0.3, min_rank=0, progress=False)


def test_compress_latency_target_measures_and_skips_slow_layers():
    net = _net()
    model, report = lt.compress(
        net, latency_target=0.9, example_inputs=_calibration(1)[0], progress=False, exclude=["dw"]
    )
    for r in report.layers:
        assert r.latency_dense_s is not None
        if r.compressed:
            assert "measured" in r.reason
            assert r.details["latency_candidates"]
        else:
            assert "latency target" in r.reason or "min_rank" in r.reason
    with pytest.raises(ValueError, match="input shapes"):
        lt.compress(net, latency_target=0.5, progress=False)


def test_compress_cp_and_rank():
    net = _net()
    with pytest.warns(UserWarning, match="rank <= 2"):
        model, report = lt.compress(net, rank=2, conv="cp", progress=False, exclude=["dw"])
    assert isinstance(model.conv2, lt.CPConv2d) and model.conv2.rank == 2
    assert isinstance(model.pw, lt.TuckerConv2d)  # 1x1: a low-rank channel mix


def test_compress_argument_errors():
    net = _net()
    with pytest.raises(ValueError, match="exactly one"):
        lt.compress(net, progress=False)
    with pytest.raises(ValueError, match="exactly one"):
        lt.compress(net, ratio=0.5, rank=3, progress=False)
    with pytest.raises(ValueError, match="conv"):
        lt.compress(net, ratio=0.5, conv="svd", progress=False)
    with pytest.raises(ValueError, match="budget"):
        lt.compress(net, budget=2.0, progress=False)
    with pytest.raises(TypeError):
        lt.compress("not a model", ratio=0.5)
    with pytest.raises(ValueError, match="calibration"):
        lt.compress(net, ratio=0.5, calibration=[], progress=False)


def test_compress_progress_bar(capsys):
    lt.compress(_net(), ratio=0.5, include=["fc"], progress=True)
    assert "compress [" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::lrkernels.decompose.CalibrationWarning")  # few rows on purpose
def test_sequential_calibration_sees_compressed_inputs():
    """The second layer is fitted on the inputs the compressed first layer produces."""
    net = _net()
    cal = _calibration()
    seen = []
    orig = lt.compress.__globals__["_capture_inputs"]

    def spy(model, module, batches, max_rows):
        seen.append(type(model.conv1).__name__)
        return orig(model, module, batches, max_rows)

    lt.compress.__globals__["_capture_inputs"] = spy
    try:
        lt.compress(
            net, ratio=0.5, calibration=cal, progress=False, include=["conv1", "conv2"], min_rank=1
        )
    finally:
        lt.compress.__globals__["_capture_inputs"] = orig
    assert seen == ["Conv2d", "TuckerConv2d"]


def test_fuse_folds_batchnorm_and_activations():
    net = _net()
    model, _ = lt.compress(net, ratio=0.6, progress=False, exclude=["dw"])
    x = _calibration(1)[0]
    with torch.no_grad():
        expect = model(x)
    fused = lt.fuse(model)
    assert {f["module"] for f in fused.lrk_fusions} == {"conv1", "conv2", "pw"}
    by_name = {f["module"]: f for f in fused.lrk_fusions}
    assert by_name["conv1"]["batchnorm"] == "bn1" and by_name["conv1"]["activation"] == "relu"
    assert by_name["pw"]["activation"] == "relu6" and by_name["pw"]["batchnorm"] is None
    assert fused.conv1.activation == "relu"
    assert not hasattr(fused, "bn1")
    with torch.no_grad():
        got = fused(x)
        assert _rel(got, expect) < 1e-5
        for m in fused.modules():
            if isinstance(m, lt.FactorizedModule):
                m.use_kernels = False
        assert _rel(fused(x), expect) < 1e-5
    # compress(fuse=True) does the same
    fused2, _ = lt.compress(net, ratio=0.6, progress=False, exclude=["dw"], fuse=True)
    with torch.no_grad():
        assert _rel(fused2(x), expect) < 1e-5


@pytest.mark.parametrize("channels_last", [False, True])
def test_fuse_moves_dense_layers_onto_the_kernels(channels_last):
    net = _net()  # uncompressed: plain convs, BatchNorms, ReLUs
    x = _calibration(1)[0]
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        expect = net(x)
    fused = lt.fuse(net)
    assert isinstance(fused.conv1, lt.Conv2d) and fused.conv1.activation == "relu"
    assert isinstance(fused.fc, lt.Linear) and isinstance(fused.dw, nn.Conv2d)  # grouped: torch
    assert isinstance(fused.pw, lt.Conv2d) and fused.pw.activation == "relu6"
    by_name = {f["module"]: f for f in fused.lrk_fusions}
    assert by_name["conv2"] == {
        "module": "conv2",
        "batchnorm": "bn2",
        "activation": "relu",
        "dense": True,
    }
    with torch.no_grad():
        got = fused(x)
    assert fused.conv1._kernels  # the kernels ran
    assert _rel(got, expect) < 1e-5
    kept = lt.fuse(net, dense=False)
    assert isinstance(kept.conv1, nn.Conv2d) and hasattr(kept, "bn1")


def test_fuse_channels_last_converts_the_input_once():
    model, _ = lt.compress(_net(), ratio=0.6, progress=False, exclude=["dw"])
    x = _calibration(1)[0]
    with torch.no_grad():
        expect = model(x)
    fused = lt.fuse(model, channels_last=True)
    assert "to_channels_last" in fused.code
    seen = []
    hook = fused.conv2.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    with torch.no_grad():
        got = fused(x)  # an NCHW input
    hook.remove()
    assert seen == [False]  # conv2 received a channels_last tensor
    assert "NHWC" in fused.conv2._kernels
    assert _rel(got, expect) < 1e-5


def test_fuse_refuses_untraceable_models():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = lt.LowRankLinear(4, 4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.fc(x)
            return x

    with pytest.raises(ValueError, match="cannot trace"):
        lt.fuse(Dynamic())


def test_sweep_with_finetune_and_folds(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(64, 16)
    target = model(x).detach()
    folds = 2

    def evaluate(m, fold=None):
        idx = slice(None) if fold is None else slice(fold * 32, fold * 32 + 32)
        with torch.no_grad():
            return -float((m(x[idx]) - target[idx]).pow(2).mean())

    def finetune(m, fold=None):
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(20):
            opt.zero_grad()
            (m(x) - target).pow(2).mean().backward()
            opt.step()

    result = lt.sweep(
        model,
        [0.5, 0.2],
        evaluate,
        finetune,
        folds=folds,
        example_inputs=x[:1],
        progress=False,
        min_rank=1,  # the 4-output layer at rank 1: this test is about the sweep, not the floor
    )
    assert [r.level for r in result.rows] == [None, 0.5, 0.2]
    assert result.rows[1].params < result.dense.params
    assert len(result.rows[1].fold_scores) == folds
    for r in result.rows[1:]:
        assert r.score_finetuned >= r.score - 1e-6  # fine-tuning towards the target helps
        assert r.latency_s > 0
    assert result.best(tolerance=1e9).level == 0.2  # everything qualifies: the smallest
    with pytest.raises(ValueError, match="tolerance"):
        result.best(tolerance=-1)
    far = lt.SweepResult([result.dense, result.rows[1]], "ratio", 1)
    far.rows[1] = lt.sweep.__globals__["SweepRow"](0.5, {}, 10, None, None, -1e9)
    with pytest.raises(ValueError, match="no level"):
        far.best(tolerance=0.0)
    assert "dense" in str(result)
    pytest.importorskip("matplotlib")
    path = result.plot(tmp_path / "sweep.png")
    assert path.exists() and path.stat().st_size > 1000


def test_sweep_argument_errors():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="folds"):
        lt.sweep(model, [0.5], lambda m: 0.0, folds=1)
    with pytest.raises(ValueError, match="empty"):
        lt.sweep(model, [], lambda m: 0.0)
    with pytest.raises(TypeError):
        lt.sweep(model, [0.5], "not callable")


def test_compress_shared_module_is_replaced_everywhere():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.b = self.a  # the same layer under two names

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    model, report = lt.compress(Shared(), rank=4, progress=False)
    assert model.a is model.b and isinstance(model.a, lt.LowRankLinear)
    assert [r.name for r in report.layers] == ["a"]


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's own, on the even kernel
def test_compress_same_padding_with_shapes_and_tuple_batch_hint():
    net = nn.Sequential(nn.Conv2d(8, 8, 4, padding="same"), nn.Conv2d(8, 8, 3, padding="same"))
    model, report = lt.compress(
        net, ratio=0.5, example_inputs=torch.randn(2, 8, 9, 9), progress=False
    )
    assert "asymmetric" in report["0"].reason and report["0"].flops_before > 0
    assert isinstance(model[1], lt.TuckerConv2d) and model[1].padding == (1, 1)
    labelled = [(torch.randn(2, 8, 9, 9), torch.zeros(2))]
    with pytest.raises(TypeError, match="positional arguments"):
        lt.compress(net, ratio=0.5, calibration=labelled, progress=False)


@pytest.mark.filterwarnings("ignore::lrkernels.decompose.CalibrationWarning")  # few rows on purpose
def test_compress_reads_calibration_lazily():
    taken = []

    def batches():
        for i in range(1000):
            taken.append(i)
            yield torch.randn(2, 3, 12, 12)

    lt.compress(
        _net(),
        ratio=0.5,
        calibration=batches(),
        max_calibration_batches=3,
        include=["conv2"],
        progress=False,
    )
    assert len(taken) == 3


@pytest.mark.parametrize(
    "kw",
    [
        dict(rank=0),
        dict(rank=-1),
        dict(rank=4.5),
        dict(rank=True),
        dict(ratio=0),
        dict(energy=2),
        dict(budget=1.5),
        dict(latency_target=True),
        dict(rank=(1, 2, 3)),
    ],
)
def test_compress_refuses_impossible_criteria(kw):
    with pytest.raises(ValueError):
        lt.compress(_net(), progress=False, example_inputs=_calibration(1)[0], **kw)


def test_fuse_leaves_what_it_cannot_fold():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 6)
            self.bn1 = nn.BatchNorm1d(6)  # on (N, L, F) input it normalizes L: not foldable
            self.conv = nn.Conv2d(6, 6, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(6, track_running_stats=False)  # batch statistics

        def forward(self, x):
            y = self.bn1(self.lin(x))
            return self.bn2(self.conv(y[:, :, :, None].expand(-1, -1, -1, 4)))

    m = M().eval()
    with torch.no_grad():
        m.bn1.running_mean.normal_()
        m.bn1.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 6, 6)
    with torch.no_grad():
        expect = m(x)
        fused = lt.fuse(m)
        assert _rel(fused(x), expect) < 1e-5
    assert hasattr(fused, "bn1") and hasattr(fused, "bn2")


def test_sweep_best_skips_levels_that_compressed_nothing_and_restores_training():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).train()
    result = lt.sweep(model, [0.9], lambda m: 1.0, progress=False)
    assert model.training
    assert result.rows[1].params >= result.dense.params  # 2x2 layers: nothing to factorize
    with pytest.raises(ValueError, match="no level"):
        result.best(tolerance=1.0)
