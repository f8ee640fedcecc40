"""Torch networks by architecture (``qcompile.models.arch``): build one, and store or load a built one.

A model step builds the module and stores it whole; the export step loads that module instead of building it
again, so the network is described in one place (the arch) and made in one place (``build``).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .arch import Arch, DigitsMobileArch, EfficientNetLiteArch, FactoryArch, MnistCnnArch, TorchvisionArch

__all__ = ["Arch", "build", "load_module", "save_module"]


def build(arch: Arch):
    """An untrained ``nn.Module`` for ``arch`` (the factory's own weights when its function sets them)."""
    match arch:
        case MnistCnnArch():
            from .mnist_cnn import MnistCnn

            return MnistCnn()
        case DigitsMobileArch():
            from .digits_mobile import DigitsMobile

            return DigitsMobile()
        case TorchvisionArch(name=name, num_classes=num_classes):
            import torchvision

            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        case EfficientNetLiteArch(name=name):
            from efficientnet_lite_pytorch import EfficientNet

            # As from_pretrained builds it; never set_swish(): Lite's activation is ReLU6, set_swish replaces it.
            return EfficientNet.from_name(name)
        case FactoryArch():
            from .factory import call_factory

            return call_factory(arch)
    raise TypeError(f"not an architecture: {arch!r}")


def save_module(module, path: Path) -> None:
    """Store the whole module (its classes by reference, its tensors by value), in eval mode.

    Equal modules give equal bytes: the pickle holds no addresses, and its sets (non-persistent buffer names) are
    empty for the networks qcompile builds, so no hash seed decides an order. Written through a file object, as
    torch then names the archive's folder "archive" rather than after the file.
    """
    import torch

    with open(path, "wb") as f:
        torch.save(module.eval(), f)


def load_module(arch: Arch, path: Path):
    """The module ``save_module`` stored for ``arch``; a factory's classes are imported from its root.

    Unpickling runs code, so only modules this cache stored (checked against their digest) are loaded.
    """
    import torch

    with _importable(arch):
        return torch.load(path, map_location="cpu", weights_only=False)


@contextmanager
def _importable(arch: Arch) -> Iterator[None]:
    """The factory's root on ``sys.path`` while its classes are looked up."""
    root = str(arch.root) if isinstance(arch, FactoryArch) else None
    if root is not None:
        sys.path.insert(0, root)
    try:
        yield
    finally:
        if root is not None and sys.path and sys.path[0] == root:
            sys.path.pop(0)
