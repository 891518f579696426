"""MTCNN's three networks (PNet, RNet, ONet) from facenet-pytorch 2.6.0, re-implemented here (the
package's ``facenet_pytorch.models.mtcnn`` imports torchvision) and loaded from the state dicts it
ships (``facenet_pytorch/data/{pnet,rnet,onet}.pt``; install with ``pip install --no-deps
facenet-pytorch``). Same layers and forward as the package's classes; ``test_models.py`` checks
them against the package's class definitions (executed from its source without the torchvision
import).

Inputs: RGB (N, 3, H, W), normalized as MTCNN does: (x * 255 - 127.5) * 0.0078125 for x in [0, 1].
Outputs as the package's: PNet -> (box regression, face probabilities (N, 2, h, w));
RNet -> (box, prob (N, 2)); ONet -> (box, landmarks, prob (N, 2)); prob[:, 1] is "face".

Also ``detect(image, pnet, rnet, onet)``: the full MTCNN cascade (image pyramid, PNet, NMS, RNet,
ONet, box regression) with numpy NMS, following facenet-pytorch's ``detect_face``.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def package_dir() -> pathlib.Path | None:
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(spec.submodule_search_locations[0])


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> MTCNN's input scale."""
    return (x * 255.0 - 127.5) * 0.0078125


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


def pretrained(name: str) -> nn.Module:
    """'pnet' / 'rnet' / 'onet' with the package's weights (strict load)."""
    root = package_dir()
    if root is None:
        raise ImportError("facenet-pytorch is not installed: pip install --no-deps facenet-pytorch")
    model = {"pnet": PNet, "rnet": RNet, "onet": ONet}[name]()
    sd = torch.load(str(root / "data" / f"{name}.pt"), map_location="cpu", weights_only=True)
    model.load_state_dict(sd, strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------------
# the cascade (numpy re-implementation of facenet_pytorch.models.utils.detect_face.detect_face)
# ------------------------------------------------------------------------------------------------


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union"):
    """Indices kept by greedy non-maximum suppression, highest score first."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    # "union": torchvision's nms (areas without +1, as the package's batched_nms);
    # "min": the package's nms_numpy(..., 'Min') (+1 pixel).
    one = 1.0 if mode == "min" else 0.0
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * h
        if mode == "min":
            o = inter / np.minimum(area[i], area[rest])
        else:
            o = inter / (area[i] + area[rest] - inter)
        order = rest[o <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _bbreg(boxes, reg):
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _rerec(boxes):
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    out = boxes.copy()
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _crops(img: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """img (3, H, W) normalized; boxes (n, >=4) -> (n, 3, size, size), area resampling as the
    package (out-of-image parts clipped)."""
    _, h, w = img.shape
    out = []
    for b in np.fix(boxes[:, :4]).astype(int):
        x1, y1, x2, y2 = max(b[0], 1), max(b[1], 1), min(b[2], w), min(b[3], h)
        if x2 < x1 or y2 < y1:
            out.append(torch.zeros(3, size, size))
            continue
        crop = img[:, y1 - 1 : y2, x1 - 1 : x2].unsqueeze(0)
        out.append(F.interpolate(crop, size=(size, size), mode="area")[0])
    return torch.stack(out) if out else torch.zeros(0, 3, size, size)


@torch.no_grad()
def detect(
    image: np.ndarray,
    pnet,
    rnet,
    onet,
    minsize: int = 20,
    thresholds=(0.6, 0.7, 0.7),
    factor: float = 0.709,
) -> np.ndarray:
    """image: (H, W, 3) uint8 or float in [0, 1]. Returns boxes (n, 5): x1, y1, x2, y2, prob."""
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    img = normalize(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))).permute(
        2, 0, 1
    )
    h, w = img.shape[1:]
    m = 12.0 / minsize
    minl = min(h, w) * m
    scales = []
    s = m
    while minl >= 12:
        scales.append(s)
        s *= factor
        minl *= factor
    all_boxes = []
    for scale in scales:
        hs, ws = int(h * scale + 1), int(w * scale + 1)
        im = F.interpolate(img[None], size=(hs, ws), mode="area")
        reg, prob = pnet(im)
        p = prob[0, 1].numpy()
        r = reg[0].numpy()
        yy, xx = np.nonzero(p >= thresholds[0])
        if len(yy) == 0:
            continue
        score = p[yy, xx]
        q1 = np.stack([xx, yy], 1) * 2 + 1
        q2 = np.stack([xx, yy], 1) * 2 + 12
        boxes = np.concatenate(
            [q1 / scale, q2 / scale, score[:, None], r[:, yy, xx].T], axis=1
        ).astype(np.float64)
        boxes[:, :4] = np.fix(boxes[:, :4])
        keep = nms(boxes[:, :4], boxes[:, 4], 0.5)
        all_boxes.append(boxes[keep])
    if not all_boxes:
        return np.zeros((0, 5))
    boxes = np.concatenate(all_boxes)
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    boxes = np.stack(
        [
            boxes[:, 0] + boxes[:, 5] * regw,
            boxes[:, 1] + boxes[:, 6] * regh,
            boxes[:, 2] + boxes[:, 7] * regw,
            boxes[:, 3] + boxes[:, 8] * regh,
            boxes[:, 4],
        ],
        1,
    )
    boxes = _rerec(boxes)
    # RNet
    if len(boxes):
        reg, prob = rnet(_crops(img, boxes, 24))
        score = prob[:, 1].numpy()
        ok = score > thresholds[1]
        boxes = np.concatenate([boxes[ok, :4], score[ok, None]], 1)
        reg = reg.numpy()[ok]
        keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _rerec(_bbreg(boxes[keep], reg[keep]))
    # ONet
    if len(boxes):
        reg, _, prob = onet(_crops(img, boxes, 48))
        score = prob[:, 1].numpy()
        ok = score > thresholds[2]
        boxes = np.concatenate([boxes[ok, :4], score[ok, None]], 1)
        boxes = _bbreg(boxes, reg.numpy()[ok])
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7, "min")]
    return boxes


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, >=4) x (m, >=4) -> (n, m) intersection over union."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-12)
