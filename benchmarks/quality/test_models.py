"""The benchmark's re-implementations against the packages they come from (skipped when torch,
silero-vad, facenet-pytorch, scikit-image or espeak-ng are missing)."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
torch = pytest.importorskip("torch")


def _need(package):
    # find_spec, not import: facenet_pytorch's __init__ imports torchvision
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")


def _silero():
    _need("silero_vad")  # find_spec: importing it sets torch to 1 thread
    import silero_vad_model

    return silero_vad_model


def test_silero_matches_jit_on_synthetic_audio():
    svm = _silero()
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    tone = np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    audio = torch.from_numpy(
        np.stack([tone, 0.05 * rng.standard_normal(t.size)]).astype(np.float32)
    )
    model = svm.SileroVAD.pretrained()
    with torch.no_grad():
        ours = model(audio)
    ref = svm.jit_probabilities(audio)
    assert ours.shape == ref.shape == (2, audio.shape[1] // 512)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_silero_matches_jit_on_speech():
    svm = _silero()
    import data

    if not data.espeak_available():
        pytest.skip("espeak-ng is not installed")
    pytest.importorskip("scipy")
    audio = torch.from_numpy(data.speech_clips("heldout")[:6])
    model = svm.SileroVAD.pretrained()
    with torch.no_grad():
        ours = model(audio)
    ref = svm.jit_probabilities(audio)
    assert (ours - ref).abs().max().item() <= 1e-4
    assert ((ref > 0.5).float().mean() > 0.2) and ((ref < 0.5).float().mean() > 0.2)


def _package_classes():
    """The package's PNet/RNet/ONet class definitions, executed from facenet_pytorch's
    models/mtcnn.py without its imports (detect_face needs torchvision)."""
    _need("facenet_pytorch")
    import mtcnn_model

    src_path = mtcnn_model.package_dir() / "models" / "mtcnn.py"
    tree = ast.parse(src_path.read_text())
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Net")]
    ns = {
        "torch": torch,
        "nn": torch.nn,
        "np": np,
        "os": __import__("os"),
        "__file__": str(src_path),
    }
    exec(compile(ast.Module(body=classes, type_ignores=[]), str(src_path), "exec"), ns)
    return mtcnn_model, ns


@pytest.mark.parametrize("name,size", [("pnet", 37), ("rnet", 24), ("onet", 48)])
def test_mtcnn_nets_match_package(name, size):
    mtcnn_model, ns = _package_classes()
    ref = ns[name[0].upper() + "Net"](pretrained=True).eval()
    ours = mtcnn_model.pretrained(name)
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape
        assert (u - v).abs().max().item() <= 1e-5


def test_mtcnn_cascade_finds_the_astronaut():
    _need("facenet_pytorch")
    skdata = pytest.importorskip("skimage.data")
    import mtcnn_model

    nets = [mtcnn_model.pretrained(n) for n in ("pnet", "rnet", "onet")]
    boxes = mtcnn_model.detect(skdata.astronaut(), *nets)
    assert len(boxes) == 1
    x1, y1, x2, y2, p = boxes[0]
    assert p > 0.99 and 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200
