"""The demo's small CNN: two conv blocks and a classifier (~420k parameters).

Trained on 4,000 MNIST digits for 5 epochs it reaches about 96% on the 1,000 held-out ones.
"""

from __future__ import annotations

import torch
from torch import nn


class MnistCnn(nn.Module):
    """Conv-BN-ReLU-MaxPool twice, then a two-layer classifier; input (N, 1, 28, 28)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
