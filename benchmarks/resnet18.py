"""A plain ResNet-18 for the lrkernels.torch benchmarks (test_bench_torch.py, resnet18_report.py).

torchvision's layout and module names (conv1/bn1/relu/maxpool/layer1..4/avgpool/fc, BasicBlock
with conv1/bn1/relu/conv2/bn2 and downsample = Sequential(1x1 conv, BatchNorm)), so that
include= patterns and fused-module names read as for torchvision's model; defined here because
torchvision from the package index needs the CUDA build of torch. Random weights (Kaiming, as
torchvision), BatchNorm affine parameters and running statistics randomized a little so that
folding them is not the identity; eval mode.

Helpers: ``resnet18()``, ``conv3x3_names(model)`` (every 3x3 convolution, i.e. all but the 7x7
stem and the 1x1 downsamples), ``compressed(model, ...)`` (those Tucker-2 compressed to a
quarter of their parameters by ``lrkernels.torch.compress``), ``random_compressed(model, ...)``
(the same modules at the same ranks with random factors: what the timing sees, in milliseconds
instead of compress's minute of HOOI on 512-channel random weights), ``set_use_kernels(model,
flag)``, ``fold_block_batchnorms(model)``.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(seed=0, num_classes=1000):
    """ResNet-18 with random weights (fixed ``seed``) and randomized BatchNorms, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    model = ResNet(num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1.0 + 0.2 * (torch.rand(n, generator=g) - 0.5))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(1.0 + 0.4 * (torch.rand(n, generator=g) - 0.5))
            elif isinstance(m, nn.Linear):
                bound = m.in_features**-0.5
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.uniform_(-bound, bound, generator=g)
    return model.eval().requires_grad_(False)


def conv3x3_names(model):
    """Names of the 3x3 convolutions (every convolution but the 7x7 stem and the 1x1
    downsamples): the 16 convolutions of the BasicBlocks."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3)
    ]


def to_channels_last(model):
    """A copy of ``model`` with its 4-d parameters and buffers in channels_last (as
    ``model.to(memory_format=torch.channels_last)``, which a user would call)."""
    import copy

    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def set_use_kernels(model, flag):
    """``use_kernels`` on every factorized module (False: torch ops)."""
    from lrkernels.torch import FactorizedModule

    for m in model.modules():
        if isinstance(m, FactorizedModule):
            m.use_kernels = flag
    return model


def compressed(
    model, ratio=0.25, num_threads=1, example_inputs=None, measure=False, method="hosvd"
):
    """(model, report): the 3x3 convolutions Tucker-2 compressed to ``ratio`` of their
    parameters by ``lrkernels.torch.compress`` (a copy; eval mode, no grad). HOSVD by default:
    the same ranks as HOOI, seconds instead of a minute on these random 512-channel weights."""
    from lrkernels.torch import compress

    if example_inputs is None:
        example_inputs = torch.randn(1, 3, 224, 224)
    cmodel, report = compress(
        model,
        ratio=ratio,
        include=conv3x3_names(model),
        example_inputs=example_inputs,
        progress=False,
        measure=measure,
        num_threads=num_threads,
        method=method,
    )
    return cmodel.eval().requires_grad_(False), report


def random_compressed(model, ratio=0.25):
    """A copy of ``model`` with every 3x3 convolution replaced by a TuckerConv2d at the rank
    ``compress(model, ratio=ratio)`` chooses (``lrkernels.rank.by_ratio``, "tucker2") but with
    random factors (nn.Conv2d-like output scale): the same shapes and ranks, hence the same
    speed, without the decomposition. For timing only."""
    import copy

    from lrkernels.rank import by_ratio
    from lrkernels.torch import TuckerConv2d
    from lrkernels.torch.compress import set_submodule

    model = copy.deepcopy(model)
    for name in conv3x3_names(model):
        conv = model.get_submodule(name)
        rank = by_ratio(tuple(conv.weight.shape), ratio, "tucker2").rank
        new = TuckerConv2d(
            conv.in_channels,
            conv.out_channels,
            tuple(conv.kernel_size),
            rank,
            stride=tuple(conv.stride),
            padding=tuple(conv.padding),
            bias=conv.bias is not None,
        )
        set_submodule(model, name, new)
    return model.eval().requires_grad_(False)


def fold_block_batchnorms(model):
    """A copy with each BasicBlock's bn1/bn2 folded into the factorized conv1/conv2 before it
    (``lrkernels.torch.fold_batchnorm``) and replaced by nn.Identity; the ReLUs stay torch ops.
    What ``fuse`` does short of the fused activation (which needs the kernels' activation=)."""
    import copy

    from lrkernels.torch import FactorizedModule, fold_batchnorm

    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, BasicBlock):
            for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
                if isinstance(getattr(m, conv), FactorizedModule):
                    fold_batchnorm(getattr(m, conv), getattr(m, bn))
                    setattr(m, bn, nn.Identity())
    return model.eval().requires_grad_(False)
