"""Winograd F(2x2, 3x3) against direct on real pretrained weights and real held-out inputs: every
3x3 convolution of MTCNN's three networks (facenet-pytorch's weights), fed the activations the
network itself produces on the held-out images (scikit-image's astronaut and scikit-learn's china
for PNet, the held-out LFW face crops for RNet and ONet). For each layer: max |y - y64| / max |y64|
of lrkernels.Conv2d with algorithm="direct" and "winograd", y64 the float64 reference
(lrkernels.reference.conv2d) on the same float32 input. 1 thread.

Run:  pip install scikit-image scikit-learn && pip install --no-deps facenet-pytorch==2.6.0
      python benchmarks/quality/winograd_error.py     (~10 s)
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402
from data import crops_tensor, detection_images, lfw_split  # noqa: E402
from mtcnn_model import normalize, pretrained  # noqa: E402

import lrkernels  # noqa: E402


def conv_inputs(model, x):
    """{layer name: (input activation float32 NCHW, nn.Conv2d)} of every 3x3 convolution."""
    seen = {}

    def keep(name):
        def hook(module, inputs, output):
            seen.setdefault(name, (inputs[0], module))  # returns None: the output stays

        return hook

    hooks = [
        m.register_forward_hook(keep(n))
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return {n: (a.numpy().astype(np.float32), m) for n, (a, m) in seen.items()}


def main() -> int:
    torch.set_num_threads(1)
    lrkernels.set_num_threads(1)
    images = dict(detection_images("heldout"))
    _, _, held, _ = lfw_split()
    cases = []
    for name in ("astronaut", "china"):
        img = torch.from_numpy(np.ascontiguousarray(images[name].transpose(2, 0, 1)))[None]
        img = torch.nn.functional.interpolate(img, scale_factor=0.5, mode="bilinear")
        cases.append(("pnet", name, normalize(img)))
    cases.append(("rnet", "LFW held-out crops 24x24", crops_tensor(held, 24)))
    cases.append(("onet", "LFW held-out crops 48x48", crops_tensor(held, 48)))
    print(f"lrkernels {lrkernels.__version__}, ISA {lrkernels.get_isa()}, 1 thread")
    print(f"{'net':5s} {'input':26s} {'layer':7s} {'shape (N, C, H, W)':20s} {'Cout':>4s} "
          f"{'direct':>9s} {'winograd':>9s}")  # fmt: skip
    worst = 0.0
    for net, what, x in cases:
        for layer, (a, conv) in conv_inputs(pretrained(net), x).items():
            w = conv.weight.detach().numpy()
            b = conv.bias.detach().numpy()
            ref = lrkernels.reference.conv2d(a.astype(np.float64), w, b)
            errs = []
            for algorithm in ("direct", "winograd"):
                y = lrkernels.Conv2d(w, b, algorithm=algorithm)(a)
                errs.append(np.abs(y - ref).max() / np.abs(ref).max())
            worst = max(worst, errs[1])
            print(f"{net:5s} {what:26s} {layer:7s} {str(a.shape):20s} {w.shape[0]:4d} "
                  f"{errs[0]:9.2e} {errs[1]:9.2e}")  # fmt: skip
    print(f"worst Winograd max relative error: {worst:.2e} (goal <= 1e-4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
