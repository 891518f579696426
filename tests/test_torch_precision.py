"""lrkernels.torch at precision="fp16" / "int8": the factorized modules' fused inference kernels,
compress(precision=), training (float32 torch ops), save/load. Skipped without torch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import lrkernels  # noqa: E402
import lrkernels.torch as lt  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:compress.*rank <= 2")

# max |y - y_fp32| / max |y_fp32| of the whole model against the fp32-compressed one
TOLERANCE = {"fp16": 5e-3, "int8": 5e-2}
# the GEMM family each precision runs (lrkernels.last_used_kernel() names a row of it)
FAMILY = {"fp32": "f32-", "fp16": "f16w-", "int8": "qd8-"}


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 96), nn.ReLU(), nn.Linear(96, 10)
    )


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


MODELS = {"mlp": (_mlp, (32, 64)), "cnn": (_cnn, (4, 3, 12, 12))}


def _input(shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _compress(name, precision, **kwargs):
    build, _ = MODELS[name]
    kwargs.setdefault("ratio", 0.5)
    return lt.compress(
        build(), progress=False, measure=False, min_rank=1, precision=precision, **kwargs
    )


def _factorized(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, lt.FactorizedModule)}


def _rel_max_error(y, ref):
    return float((y - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def fp32_models():
    return {name: _compress(name, "fp32")[0].eval() for name in MODELS}


# ---- the modules ---------------------------------------------------------------------------


def test_module_precision_default_and_validation():
    m = lt.LowRankLinear(16, 8, 4)
    assert m.precision == "fp32" and m.to_layer().precision == "fp32"
    for bad in ("bf16", "FP16", "int4", None, 8):
        with pytest.raises(ValueError, match="'fp32', 'fp16', 'int8'"):
            m.precision = bad
        with pytest.raises(ValueError, match="precision must be one of"):
            lt.LowRankLinear(16, 8, 4, precision=bad)
    assert m.precision == "fp32"
    t = lt.TuckerConv2d(4, 6, 3, 2, padding=1, precision="int8")
    assert t.precision == "int8" and "precision='int8'" in repr(t)
    assert lt.Linear(8, 4, precision="fp16").to_layer().precision == "fp16"
    assert lt.Conv2d(3, 4, 3, precision="fp16").to_layer().precision == "fp16"


@pytest.mark.parametrize(
    "make",
    [
        lambda: lt.CPConv2d(4, 6, 3, 2),
        lambda: lt.LowRankLSTM(8, 6, rank=[(2, 2)]),
        lambda: lt.LowRankEmbedding(20, 8, 3),
    ],
    ids=["cp", "lstm", "embedding"],
)
def test_fp32_only_modules_refuse_other_precisions(make):
    m = make()
    assert m.precision == "fp32"
    m.precision = "fp32"
    for p in ("fp16", "int8"):
        with pytest.raises(ValueError, match="fp32 only"):
            m.precision = p
    with pytest.raises(ValueError, match="precision must be one of"):
        m.precision = "bf16"
    assert m.precision == "fp32"


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_setting_precision_repacks_the_kernel(precision):
    torch.manual_seed(0)
    m = lt.LowRankLinear(64, 48, 12).eval()
    x = _input((8, 64))
    with torch.no_grad():
        y32 = m(x)
        assert lrkernels.last_used_kernel().startswith(FAMILY["fp32"])
        m.precision = precision
        y = m(x)
        assert lrkernels.last_used_kernel().startswith(FAMILY[precision])
        assert m.to_layer().precision == precision
        assert not torch.equal(y, y32)
        assert _rel_max_error(y, y32) <= TOLERANCE[precision]
        m.precision = "fp32"
        assert torch.equal(m(x), y32)


# ---- compress ------------------------------------------------------------------------------


def test_compress_rejects_bad_precision():
    with pytest.raises(ValueError, match="'fp32', 'fp16', 'int8'"):
        lt.compress(_mlp(), ratio=0.5, progress=False, precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        lt.compress(_mlp(), ratio=0.5, progress=False, precision=None)
    with pytest.raises(ValueError, match="precision must be one of"):
        lt.fuse(_mlp(), precision="int4")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("name", list(MODELS))
def test_compressed_model_at_precision(fp32_models, name, precision):
    ref_model = fp32_models[name]
    model, report = _compress(name, precision)
    model.eval()
    # the same factors as the fp32 compression: only the inference kernels differ
    ref_state = ref_model.state_dict()
    assert all(torch.equal(v, ref_state[k]) for k, v in model.state_dict().items())
    modules = _factorized(model)
    assert len(modules) >= 3
    assert report.criterion["precision"] == precision
    for row in report.layers:
        if row.compressed:
            assert row.precision == precision and "precision" not in row.details
        else:
            assert row.precision is None
    x = _input(MODELS[name][1])
    for m in modules.values():
        assert m.precision == precision and m.to_layer().precision == precision
    with torch.no_grad():
        y = model(x)
        ref = ref_model(x)
        for m in modules.values():  # each fused layer runs the precision's kernels
            m(
                torch.randn(1, m.in_features)
                if not m.is_conv
                else torch.randn(1, m.in_channels, 6, 6)
            )
            assert lrkernels.last_used_kernel().startswith(FAMILY[precision])
            assert next(iter(m._kernels.values()))[1].precision == precision
    err = _rel_max_error(y, ref)
    assert 0 < err <= TOLERANCE[precision], err


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_training_stays_float32_and_repacks(precision):
    model, _ = _compress("cnn", precision)
    x = _input(MODELS["cnn"][1])
    model.eval()
    with torch.no_grad():
        before = model(x)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = model(x).pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model(x)
        # the fused layers repacked from the stepped factors, still at the precision
        for m in _factorized(model).values():
            assert m.precision == precision
            assert next(iter(m._kernels.values()))[1].precision == precision
        for m in _factorized(model).values():
            m.use_kernels = False
        torch_ops = model(x)
    assert not torch.equal(after, before)
    assert _rel_max_error(after, torch_ops) <= TOLERANCE[precision]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_cp_layers_stay_fp32_with_the_reason(precision):
    model, report = _compress("cnn", precision, conv="cp")
    kinds = {type(m).__name__: m.precision for m in _factorized(model).values()}
    assert kinds.get("CPConv2d") == "fp32" and kinds.get("TuckerConv2d") == precision
    cp_rows = [r for r in report.layers if r.kind == "CPConv2d"]
    assert cp_rows and all(r.precision == "fp32" for r in cp_rows)
    assert all("fp32 kernels only" in r.details["precision"] for r in cp_rows)
    assert f"{cp_rows[0].name} at fp32:" in str(report)
    assert report.to_dict()["layers"][0]["precision"] in (None, "fp32", precision)


# ---- save / load ---------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("name", list(MODELS))
def test_save_load_keeps_precision(tmp_path, name, precision):
    model, _ = _compress(name, precision)
    model.eval()
    path = tmp_path / "model.lrk"
    lt.save(model, path)
    layers = lrkernels.load_layers(path)  # the torch-free side
    assert set(layers) == set(_factorized(model))
    assert all(layer.precision == precision for layer in layers.values())
    loaded = lt.load(MODELS[name][0](seed=5), path).eval()
    for n, m in _factorized(loaded).items():
        assert m.precision == precision
        ref = model.get_submodule(n)
        assert all(torch.equal(a, b) for a, b in zip(m.parameters(), ref.parameters()))
    x = _input(MODELS[name][1])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        y = layers["0"](x.numpy()) if name == "mlp" else None
    if y is not None:  # the torch-free layer computes what the module does
        with torch.no_grad():
            np.testing.assert_array_equal(y, model[0](x).numpy())


def test_fused_model_at_precision_round_trip(tmp_path):
    # compress then fuse (ReLUs into the kernels), the dense layers fuse converts at int8 too
    model, _ = _compress("cnn", "int8")
    fused = lt.fuse(model, precision="int8")
    dense = [m for m in fused.modules() if isinstance(m, (lt.Linear, lt.Conv2d))]
    assert all(m.precision == "int8" for m in _factorized(fused).values())
    assert all(m.precision == "int8" for m in dense)
    path = tmp_path / "fused.lrk"
    lt.save(fused, path)
    loaded = lt.load(_cnn(seed=3), path)
    assert all(m.precision == "int8" for m in _factorized(loaded).values())
    x = _input(MODELS["cnn"][1])
    with torch.no_grad():
        assert torch.equal(loaded(x), fused(x))
