"""A MobileNetV3-style net for 28x28 digits (``model.net=mobile``): hardswish stem, inverted residual blocks with
depthwise convolutions, squeeze-excite with a hardsigmoid gate, and a hardswish head (~58k parameters).

Its layout follows MobileNetV3-Small (Howard et al. 2019, table 2) shrunk to MNIST: the first blocks use ReLU,
the later ones hardswish and squeeze-excite, 5x5 depthwise kernels where the feature map is small.
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """Global average, a 1x1 bottleneck (a quarter of the channels, at least 4) with ReLU, a hardsigmoid gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(4, channels // 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(mid, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expansion (unless ``expand == cin``), depthwise kxk, optional squeeze-excite, linear 1x1 projection;
    a residual connection where the shape allows."""

    def __init__(self, cin: int, expand: int, cout: int, kernel: int, stride: int, se: bool, act: type) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expand != cin:
            layers += [nn.Conv2d(cin, expand, 1, bias=False), nn.BatchNorm2d(expand), act()]
        layers += [nn.Conv2d(expand, expand, kernel, stride, kernel // 2, groups=expand, bias=False),
                   nn.BatchNorm2d(expand), act()]
        if se:
            layers.append(SqueezeExcite(expand))
        layers += [nn.Conv2d(expand, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


# (kernel, expanded channels, output channels, squeeze-excite, activation, stride), 14x14 -> 7x7 -> 4x4
BLOCKS = [
    (3, 16, 16, True, nn.ReLU, 1),
    (3, 48, 24, False, nn.ReLU, 2),
    (3, 72, 24, False, nn.ReLU, 1),
    (5, 96, 32, True, nn.Hardswish, 2),
    (5, 128, 32, True, nn.Hardswish, 1),
]


class DigitsMobile(nn.Module):
    """Stem conv 3x3/2 (16) -> five inverted residual blocks -> 1x1 conv (96) -> global average -> 128 -> 10;
    input (N, 1, 28, 28)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()]
        cin = 16
        for kernel, expand, cout, se, act, stride in BLOCKS:
            layers.append(InvertedResidual(cin, expand, cout, kernel, stride, se, act))
            cin = cout
        layers += [nn.Conv2d(cin, 96, 1, bias=False), nn.BatchNorm2d(96), nn.Hardswish()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(96, 128), nn.Hardswish(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))
