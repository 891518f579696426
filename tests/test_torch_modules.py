"""lrkernels.torch modules: fused path vs torch ops vs the numpy reference, both memory formats,
gradients, staleness after parameter updates, conversions from nn.Linear / nn.Conv2d, BatchNorm
folding, ONNX export. Skipped without torch."""

import copy
import io
import math
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import lrkernels.torch as lt  # noqa: E402
from lrkernels import reference  # noqa: E402

RTOL, ATOL = 1e-4, 1e-4

CONV_GEOMETRIES = [
    dict(kernel_size=3, stride=1, padding=1, dilation=1),
    dict(kernel_size=3, stride=2, padding=1, dilation=1),
    dict(kernel_size=(1, 3), stride=(2, 1), padding=(0, 1), dilation=1),
    dict(kernel_size=3, stride=1, padding=2, dilation=2),
    dict(kernel_size=5, stride=1, padding=0, dilation=1),
]


def _close(a, b, rtol=RTOL, atol=ATOL):
    a = a.detach().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)
    b = b.detach().double().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, np.float64)
    scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * scale)


def _make(kind, cin, cout, rank, bias=True, activation=None, **geometry):
    torch.manual_seed(cin * 131 + cout * 7 + (rank if isinstance(rank, int) else sum(rank)))
    if kind == "LowRankLinear":
        m = lt.LowRankLinear(cin, cout, rank, bias=bias, activation=activation)
    else:
        m = getattr(lt, kind)(cin, cout, rank=rank, bias=bias, activation=activation, **geometry)
    if bias:
        with torch.no_grad():
            m.bias.normal_()
    return m.eval().requires_grad_(False)


def _reference(m, x):
    """The numpy oracle of a module (float64)."""
    f = [getattr(m, n).double().numpy() for n in m.factor_names]
    b = None if m.bias is None else m.bias.double().numpy()
    xn = x.double().numpy()
    if m.kind == "LowRankLinear":
        y = reference.lowrank_linear(xn, *f, b)
    else:
        g = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, layout="NCHW")
        fn = reference.tucker_conv2d if m.kind == "TuckerConv2d" else reference.cp_conv2d
        y = fn(xn, *f, b, **g)
    lo, hi = lt.modules.activation_bounds(m.activation)
    return np.where(np.isnan(y), y, np.clip(y, lo, hi))


def _fused_and_torch(m, x):
    m.refresh()
    with torch.no_grad():
        fused = m(x)
    assert m._kernels, "the fused kernel did not run"
    m.use_kernels = False
    with torch.no_grad():
        plain = m(x)
    m.use_kernels = True
    return fused, plain


# ---- correctness against torch ops and the reference ----------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cin,cout,rank", [(1, 1, 1), (17, 9, 3), (33, 65, 16), (64, 31, 7)])
@pytest.mark.parametrize("lead", [(), (1,), (5,), (2, 3)])
def test_lowrank_linear_matches_torch_and_reference(bias, cin, cout, rank, lead):
    m = _make("LowRankLinear", cin, cout, rank, bias)
    x = torch.randn(*lead, cin)
    fused, plain = _fused_and_torch(m, x)
    assert fused.shape == plain.shape == (*lead, cout)
    assert fused.dtype == torch.float32
    _close(fused, plain)
    _close(fused, _reference(m, x.reshape(-1, cin)).reshape(*lead, cout))


@pytest.mark.parametrize("kind", ["TuckerConv2d", "CPConv2d"])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=lambda g: str(tuple(g.values())))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_matches_torch_and_reference(kind, geometry, bias, channels_last):
    rank = (5, 7) if kind == "TuckerConv2d" else 6
    m = _make(kind, 13, 17, rank, bias, **geometry)
    x = torch.randn(2, 13, 11, 9)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    fused, plain = _fused_and_torch(m, x)
    assert fused.shape == plain.shape
    layout = "NHWC" if channels_last else "NCHW"
    assert layout in m._kernels
    if channels_last:
        assert fused.is_contiguous(memory_format=torch.channels_last)
    else:
        assert fused.is_contiguous()
    _close(fused, plain)
    _close(fused, _reference(m, x.contiguous()))


@pytest.mark.parametrize("cin,cout,rank", [(1, 8, (1, 1)), (16, 16, (15, 16)), (24, 40, (8, 17))])
def test_tucker_channels_around_tile_edges(cin, cout, rank):
    m = _make("TuckerConv2d", cin, cout, rank, kernel_size=3, padding=1)
    x = torch.randn(1, cin, 7, 33)
    fused, plain = _fused_and_torch(m, x)
    _close(fused, plain)


def test_conv_unbatched_and_strided_input():
    m = _make("TuckerConv2d", 8, 12, (4, 4), kernel_size=3, padding=1)
    x = torch.randn(8, 10, 10)
    fused, plain = _fused_and_torch(m, x)
    assert fused.shape == (12, 10, 10)
    _close(fused, plain)
    xs = torch.randn(1, 8, 20, 20)[:, :, ::2, ::2]  # neither NCHW- nor NHWC-contiguous
    fused, plain = _fused_and_torch(m, xs)
    _close(fused, plain)


def test_zero_batch():
    m = _make("LowRankLinear", 8, 4, 2)
    with torch.no_grad():
        assert m(torch.randn(0, 8)).shape == (0, 4)


def test_nonfloat32_and_grad_inputs_use_torch_ops():
    m = _make("LowRankLinear", 8, 4, 2)
    with torch.no_grad():
        m.double()(torch.randn(3, 8, dtype=torch.float64))
    assert not m._kernels
    m = _make("LowRankLinear", 8, 4, 2)
    x = torch.randn(3, 8, requires_grad=True)
    y = m(x)
    assert y.requires_grad and not m._kernels
    m = _make("LowRankLinear", 8, 4, 2).requires_grad_(True)
    m(torch.randn(3, 8))  # grad enabled, parameters require grad: torch ops (autograd)
    assert not m._kernels
    with torch.inference_mode():
        m(torch.randn(3, 8))
    assert m._kernels


def test_parameters_not_requiring_grad_use_the_kernel_even_with_grad_enabled():
    m = _make("LowRankLinear", 8, 4, 2)  # requires_grad_(False)
    m(torch.randn(3, 8))
    assert m._kernels


# ---- autograd ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["LowRankLinear", "TuckerConv2d", "CPConv2d"])
def test_gradients_equal_the_plain_torch_formulation(kind):
    geometry = {} if kind == "LowRankLinear" else dict(kernel_size=3, stride=2, padding=1)
    rank = (3, 4) if kind == "TuckerConv2d" else 3
    m = _make(kind, 6, 5, rank, **geometry).double().requires_grad_(True).train()
    x = (
        torch.randn(2, 6, dtype=torch.float64)
        if kind == "LowRankLinear"
        else torch.randn(2, 6, 7, 7, dtype=torch.float64)
    )
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda inp: m(inp), (x,))
    # the same loss written by hand in torch ops
    params = {n: getattr(m, n).detach().clone().requires_grad_(True) for n in m.factor_names}
    bias = m.bias.detach().clone().requires_grad_(True)
    F = torch.nn.functional
    if kind == "LowRankLinear":
        y_ref = F.linear(F.linear(x, params["V"]), params["U"], bias)
    elif kind == "TuckerConv2d":
        y = F.conv2d(x, params["first"][:, :, None, None])
        y = F.conv2d(y, params["core"], None, 2, 1)
        y_ref = F.conv2d(y, params["last"][:, :, None, None], bias)
    else:
        dense = torch.einsum(
            "rc,rh,rw,or->ochw",
            params["first"],
            params["vertical"],
            params["horizontal"],
            params["last"],
        )
        y_ref = F.conv2d(x, dense, bias, 2, 1)
    y_ref.pow(2).sum().backward()
    m(x).pow(2).sum().backward()
    for n in m.factor_names:
        _close(getattr(m, n).grad, params[n].grad, rtol=1e-9, atol=1e-9)
    _close(m.bias.grad, bias.grad, rtol=1e-9, atol=1e-9)


# ---- packed weights follow the parameters -----------------------------------------------------


@pytest.mark.parametrize("kind", ["LowRankLinear", "TuckerConv2d"])
def test_no_stale_packed_weights_after_an_optimizer_step(kind):
    geometry = {} if kind == "LowRankLinear" else dict(kernel_size=3, padding=1)
    m = _make(kind, 8, 6, 3 if kind == "LowRankLinear" else (3, 3), **geometry)
    m.requires_grad_(True)
    x = torch.randn(4, 8) if kind == "LowRankLinear" else torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        before = m(x)
    assert m._kernels
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    m.train()
    m(x).pow(2).sum().backward()
    opt.step()
    m.eval()
    with torch.no_grad():
        after = m(x)
        m.use_kernels = False
        expect = m(x)
    assert not torch.allclose(before, after)
    _close(after, expect)


def test_load_state_dict_and_refresh_after_data_writes():
    m = _make("LowRankLinear", 8, 6, 3)
    other = _make("LowRankLinear", 8, 6, 3)
    with torch.no_grad():
        other.U.normal_()
    x = torch.randn(2, 8)
    with torch.no_grad():
        m(x)
        m.load_state_dict(other.state_dict())
        _close(m(x), other(x))
        m.V.data.mul_(2.0)  # invisible to the version counter: refresh() is the documented way
        m.refresh()
        y = m(x)
        m.use_kernels = False
        _close(y, m(x))


def test_copy_and_pickle_drop_the_kernel_cache():
    m = _make("TuckerConv2d", 8, 6, (3, 3), kernel_size=3, padding=1)
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        y = m(x)
        for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
            assert not clone._kernels
            _close(clone(x), y, rtol=0, atol=0)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)


# ---- activations (fused into the kernels' output store) ---------------------------------------


@pytest.mark.parametrize("activation", ["relu", "relu6", (-0.5, 0.25), (None, 0.0)])
@pytest.mark.parametrize("kind", ["LowRankLinear", "TuckerConv2d", "CPConv2d"])
def test_fused_activation(kind, activation):
    geometry = {} if kind == "LowRankLinear" else dict(kernel_size=3, padding=1)
    rank = (4, 5) if kind == "TuckerConv2d" else 4
    m = _make(kind, 9, 11, rank, activation=activation, **geometry)
    x = 4 * (torch.randn(3, 9) if kind == "LowRankLinear" else torch.randn(2, 9, 6, 5))
    fused, plain = _fused_and_torch(m, x)
    _close(fused, plain)
    _close(fused, _reference(m, x))
    lo, hi = lt.modules.activation_bounds(m.activation)
    assert float(fused.min()) >= lo and float(fused.max()) <= hi
    layer = next(iter(m._kernels.values()))[1]
    assert (layer.output_min, layer.output_max) == (lo, hi)


@pytest.mark.parametrize("bad", ["gelu", (1.0, 0.0), (math.nan, 1.0), 3])
def test_bad_activation(bad):
    with pytest.raises((ValueError, TypeError)):
        lt.LowRankLinear(4, 4, 2, activation=bad)


# ---- conversions ------------------------------------------------------------------------------


def test_from_linear_and_from_conv_read_the_module():
    torch.manual_seed(0)
    lin = nn.Linear(40, 30)
    m = lt.LowRankLinear.from_linear(lin, rank=30)  # full rank: exact
    x = torch.randn(3, 40)
    with torch.no_grad():
        _close(m(x), lin(x))
    assert m.rank_choice is not None and m.rank == 30
    conv = nn.Conv2d(12, 10, 3, stride=2, padding=2, dilation=2, bias=False)
    t = lt.TuckerConv2d.from_conv(conv, rank=(12, 10))
    assert (t.stride, t.padding, t.dilation, t.bias) == ((2, 2), (2, 2), (2, 2), None)
    x = torch.randn(1, 12, 15, 15)
    with torch.no_grad():
        _close(t(x), conv(x))
    same = nn.Conv2d(12, 10, 3, padding="same")
    t = lt.TuckerConv2d.from_conv(same, ratio=0.5)
    assert t.padding == (1, 1)
    one = nn.Conv2d(12, 10, 1, stride=2)
    t = lt.TuckerConv2d.from_conv(one, rank=4)  # a 1x1 convolution: a low-rank channel mix
    assert t.kernel_size == (1, 1) and t.stride == (2, 2)
    cp = lt.CPConv2d.from_conv(nn.Conv2d(8, 8, 3, padding=1), rank=5)
    assert cp.rank == 5
    assert lt.TuckerConv2d.from_conv(nn.Conv2d(8, 8, 3), ranks=(3, 4)).rank == (3, 4)
    with pytest.raises(ValueError, match="exactly one"):
        lt.TuckerConv2d.from_conv(nn.Conv2d(8, 8, 3), ranks=(3, 4), rank=2)


def test_from_conv_with_calibration_tensor():
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    calib = torch.randn(4, 8, 9, 9)
    t = lt.TuckerConv2d.from_conv(conv, rank=(4, 4), calibration=calib)
    assert t.rank == (4, 4)


@pytest.mark.parametrize(
    "module, why",
    [
        (nn.Conv2d(8, 8, 3, groups=2), "groups=2"),
        (nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), "padding_mode"),
        (nn.Conv2d(8, 8, 2, padding="same"), "asymmetric"),
        (nn.Linear(1, 8), "no lower rank"),
        (nn.MultiheadAttention(8, 2).out_proj, "not a plain nn.Linear"),
    ],
)
def test_unfactorizable_modules_are_refused_with_the_reason(module, why):
    assert why in lt.why_not_factorizable(module)
    with pytest.raises(ValueError, match="cannot factorize"):
        if isinstance(module, nn.Linear):
            lt.LowRankLinear.from_linear(module, rank=1)
        else:
            lt.TuckerConv2d.from_conv(module, rank=1)


def test_criterion_errors():
    lin = nn.Linear(8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        lt.LowRankLinear.from_linear(lin)
    with pytest.raises(ValueError, match="exactly one"):
        lt.LowRankLinear.from_linear(lin, rank=2, ratio=0.5)
    with pytest.raises(TypeError, match="unexpected"):
        lt.LowRankLinear.from_linear(lin, rnak=2)
    with pytest.raises(TypeError):
        lt.LowRankLinear.from_linear(nn.Conv2d(2, 2, 1), rank=1)
    with pytest.raises(ValueError):
        lt.LowRankLinear(0, 4, 2)
    with pytest.raises(ValueError, match="needs U"):
        lt.LowRankLinear.from_factors(torch.randn(4, 2), torch.randn(3, 5))
    with pytest.raises(ValueError, match="bias"):
        lt.TuckerConv2d.from_factors(
            torch.randn(2, 3), torch.randn(2, 2, 3, 3), torch.randn(4, 2), torch.randn(5)
        )


def test_fold_batchnorm():
    torch.manual_seed(2)
    m = _make("TuckerConv2d", 6, 8, (3, 4), kernel_size=3, padding=1, bias=False)
    bn = nn.BatchNorm2d(8).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        expect = bn(m(x))
        lt.fold_batchnorm(m, bn)
        _close(m(x), expect)
    lin = _make("LowRankLinear", 6, 8, 3)
    bn1 = nn.BatchNorm1d(8).eval()
    with torch.no_grad():
        bn1.running_mean.normal_()
        x = torch.randn(5, 6)
        expect = bn1(lin(x))
        _close(lt.fold_batchnorm(lin, bn1)(x), expect)
    with pytest.raises(ValueError, match="features"):
        lt.fold_batchnorm(lin, nn.BatchNorm1d(3))


# ---- export -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's own deprecations
def test_onnx_export_runs_in_onnxruntime(tmp_path, dynamo):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(3)
    model = nn.Sequential(
        _make("TuckerConv2d", 3, 8, (2, 4), kernel_size=3, padding=1, activation="relu"),
        _make("CPConv2d", 8, 8, 4, kernel_size=3, padding=1),
        nn.Flatten(),
        _make("LowRankLinear", 8 * 6 * 6, 5, 3),
    ).eval()
    x = torch.randn(2, 3, 6, 6)
    path = tmp_path / "m.onnx"
    with torch.no_grad():
        expect = model(x)
        torch.onnx.export(model, (x,), str(path), dynamo=dynamo, input_names=["x"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"x": x.numpy()})
    _close(got, expect)
    assert len(sess.get_inputs()) == 1 and sess.get_inputs()[0].name == "x"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_jit_trace_records_torch_ops():
    m = _make("TuckerConv2d", 4, 4, (2, 2), kernel_size=3, padding=1)
    x = torch.randn(1, 4, 5, 5)
    traced = torch.jit.trace(m, x)
    _close(traced(x + 1), m(x + 1))


def test_assignments_and_conversions_repack():
    m = _make("LowRankLinear", 8, 6, 3)
    x = 4 * torch.randn(5, 8)
    with torch.no_grad():
        m(x)
        m.activation = "relu"  # a new activation: the packed layer is rebuilt
        assert float(m(x).min()) >= 0
        m.bias = nn.Parameter(torch.full((6,), 100.0))  # a new parameter object
        assert float(m(x).mean()) > 90
        m.double()  # float64 parameters: torch ops (fused only for float32)
        assert m(x.double()).dtype == torch.float64
        m.float()
        y = m(x)
        m.use_kernels = False
        _close(y, m(x))


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=lambda g: str(tuple(g.values())))
@pytest.mark.parametrize("channels_last", [False, True])
def test_dense_conv2d_module(geometry, channels_last):
    torch.manual_seed(5)
    conv = nn.Conv2d(7, 9, **geometry).eval()
    m = lt.Conv2d.from_conv(conv).eval().requires_grad_(False)
    x = torch.randn(2, 7, 12, 10)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    fused, plain = _fused_and_torch(m, x)
    with torch.no_grad():
        _close(fused, conv(x))
    _close(fused, plain)


def test_dense_linear_module_and_refusals():
    torch.manual_seed(6)
    lin = nn.Linear(13, 5)
    m = lt.Linear.from_linear(lin).eval().requires_grad_(False)
    x = torch.randn(3, 4, 13)
    fused, plain = _fused_and_torch(m, x)
    with torch.no_grad():
        _close(fused, lin(x))
    with pytest.raises(ValueError, match="groups"):
        lt.Conv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError):
        lt.Linear.from_linear(nn.Conv2d(4, 4, 3))


def test_fused_optimizers_functional_call_and_pruning_are_seen():
    """Fused optimizers do not bump versions; functional_call swaps parameters behind
    __setattr__; pruning moves the weight out of _parameters: none may leave a stale pack."""
    from torch.func import functional_call
    from torch.nn.utils import prune

    m = _make("LowRankLinear", 8, 6, 3).requires_grad_(True)
    x = torch.randn(4, 8)
    with torch.no_grad():
        m(x)
    opt = torch.optim.Adam(m.parameters(), lr=0.1, fused=True)
    m(x).square().sum().backward()
    opt.step()
    with torch.no_grad():
        fused, plain = _fused_and_torch(m, x)
    _close(fused, plain)
    with torch.no_grad():
        own = m(x)
        new = {k: torch.randn_like(v) for k, v in m.named_parameters()}
        got = functional_call(m, new, (x,))
        m.use_kernels = False
        expect = functional_call(m, new, (x,))
    assert not torch.allclose(got, own)
    _close(got, expect)
    lin = lt.Linear(8, 4).eval()
    prune.l1_unstructured(lin, "weight", 0.5)
    with torch.no_grad():
        _close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias))
