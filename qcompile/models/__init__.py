"""Torch model architectures the steps can build, named by a small JSON-able spec."""

from __future__ import annotations

from typing import Any


def build_torch_model(arch: dict[str, Any]):
    """An untrained ``nn.Module`` for ``arch`` = {"family": "torchvision"|"mnist_cnn", "name", "num_classes"}."""
    if arch["family"] == "mnist_cnn":
        from .mnist_cnn import MnistCnn

        return MnistCnn()
    if arch["family"] == "torchvision":
        import torchvision

        return torchvision.models.get_model(arch["name"], weights=None, num_classes=arch["num_classes"])
    raise ValueError(f"unknown model family {arch['family']!r}")
