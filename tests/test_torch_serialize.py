"""lrkernels.torch.save / load and the torch-free loader. Skipped without torch."""

import json
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import lrkernels  # noqa: E402
import lrkernels.torch as lt  # noqa: E402
from test_torch_compress import _calibration, _net  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:compress.*rank <= 2")


def _compressed(fuse=False):
    model, _ = lt.compress(_net(), ratio=0.5, progress=False, exclude=["dw"], fuse=fuse, min_rank=1)
    with torch.no_grad():  # make the non-factorized state differ from a fresh model's
        model.dw.weight.mul_(1.5)
    return model


@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
def test_save_load_round_trip(tmp_path, fuse):
    model = _compressed(fuse)
    path = tmp_path / "model.lrk"
    lt.save(model, path)
    x = _calibration(1)[0]
    with torch.no_grad():
        expect = model(x)
    fresh = _net(seed=123)  # a freshly built dense architecture, other weights
    loaded = lt.load(fresh, path)
    assert isinstance(loaded.conv2, lt.TuckerConv2d) and isinstance(loaded.fc, lt.LowRankLinear)
    assert loaded.conv2.rank == model.conv2.rank
    if fuse:
        assert loaded.conv1.activation == "relu" and not hasattr(loaded, "bn1")
    with torch.no_grad():
        got = loaded.eval()(x)
    np.testing.assert_allclose(got.numpy(), expect.numpy(), rtol=1e-6, atol=1e-6)


def test_save_load_dense_fused_model(tmp_path):
    # dense layers on the kernels, BatchNorms folded, ReLUs fused, run in channels_last
    fused = lt.fuse(_net(), channels_last=True)
    path = tmp_path / "dense.lrk"
    lt.save(fused, path)
    loaded = lt.load(_net(seed=9), path)
    x = _calibration(1)[0]
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), fused(x).numpy(), rtol=1e-6, atol=1e-6)
    assert isinstance(loaded.conv1, lt.Conv2d) and loaded.conv1.activation == "relu"
    assert "to_channels_last" in loaded.code


def test_the_file_is_not_a_pickle(tmp_path):
    path = tmp_path / "model.lrk"
    lt.save(_compressed(), path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        assert names and all(n.endswith(".npy") for n in names)
        for n in names:
            assert b"pickle" not in z.read(n)[:128].lower()
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            assert data[key].dtype != object


def test_load_layers_without_torch(tmp_path):
    """The same file loads as plain lrkernels layers in a process where torch cannot import."""
    model = _compressed()
    path = tmp_path / "model.lrk"
    lt.save(model, path)
    x = _calibration(1)[0][:1]
    with torch.no_grad():
        expect = model.conv2(model.relu(model.bn1(model.conv1(x)))).numpy()
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "expect.npy", expect)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch fails
        import numpy as np, lrkernels
        layers = lrkernels.load_layers({str(path)!r})
        assert sorted(layers) == ["conv1", "conv2", "fc", "pw"], sorted(layers)
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        x = np.load({str(tmp_path / "x.npy")!r})
        hdr, arrays = lrkernels.read_archive({str(path)!r})
        st = {{k[6:]: v for k, v in arrays.items() if k.startswith("state/")}}
        y = layers["conv1"](x)
        scale = st["bn1.weight"] / np.sqrt(st["bn1.running_var"] + 1e-5)
        y = (y - st["bn1.running_mean"][:, None, None]) * scale[:, None, None]
        y = np.maximum(y + st["bn1.bias"][:, None, None], 0)
        y = layers["conv2"](y.astype(np.float32))
        expect = np.load({str(tmp_path / "expect.npy")!r})
        np.testing.assert_allclose(y, expect, rtol=1e-4, atol=1e-4)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_metadata_records_modules_and_fusions(tmp_path):
    path = tmp_path / "model.lrk"
    lt.save(_compressed(fuse=True), path)
    header, _ = lrkernels.read_archive(path)
    meta = header["metadata"]
    assert meta["format"] == "lrkernels.torch"
    assert meta["modules"]["conv1"]["class"] == "TuckerConv2d"
    assert {f["module"] for f in meta["fusions"]} >= {"conv1", "conv2"}
    json.dumps(meta)


def test_load_errors(tmp_path):
    path = tmp_path / "model.lrk"
    lt.save(_compressed(), path)

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32, 10)

    with pytest.raises(ValueError, match="no submodule"):
        lt.load(Other(), path)
    plain = tmp_path / "layers.lrk"
    lrkernels.save_layers({"a": lrkernels.Linear(np.ones((2, 2), np.float32))}, plain)
    with pytest.raises(ValueError, match="not an lrkernels.torch model"):
        lt.load(_net(), plain)
    bad = tmp_path / "bad.lrk"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError):
        lt.load(_net(), bad)
    with pytest.raises(TypeError):
        lt.save("model", path)


def test_load_refuses_another_architecture_before_touching_the_model(tmp_path):
    def make(c):
        return nn.Sequential(nn.Conv2d(3, c, 3), nn.ReLU(), nn.Conv2d(c, 4, 3))

    path = tmp_path / "a.lrk"
    lt.save(lt.compress(make(8), rank=2, progress=False)[0], path)
    for wrong in (make(16), nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))):
        before = [type(m) for m in wrong]
        with pytest.raises(ValueError, match="does not match|is a"):
            lt.load(wrong, path)
        assert [type(m) for m in wrong] == before  # untouched
    doubled = lt.load(make(8).double(), path)
    assert doubled[0].first.dtype == torch.float64
    with torch.no_grad():
        doubled(torch.randn(1, 3, 7, 7, dtype=torch.float64))
