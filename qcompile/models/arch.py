"""The torch architectures a model step builds, as one discriminated union: which network, never its weights.

A model kind describes its network with one of these; ``qcompile.models.build`` makes the ``nn.Module`` and the
export step finds it in the key of what it exports. Importing this module imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Arch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MnistCnnArch(_Arch):
    """The demo's small CNN (``qcompile.models.mnist_cnn``): one 28x28 grey input, ten classes."""

    family: Literal["mnist_cnn"] = "mnist_cnn"


class DigitsMobileArch(_Arch):
    """The demo's MobileNetV3-style net (``qcompile.models.digits_mobile``): one 28x28 grey input, ten classes."""

    family: Literal["digits_mobile"] = "digits_mobile"


class TorchvisionArch(_Arch):
    """A torchvision classifier by its name, with ``num_classes`` outputs."""

    family: Literal["torchvision"] = "torchvision"
    name: str
    num_classes: int


class EfficientNetLiteArch(_Arch):
    """An EfficientNet-Lite from the optional ``efficientnet-lite-pytorch`` package."""

    family: Literal["efficientnet_lite"] = "efficientnet_lite"
    name: str


class FactoryArch(_Arch):
    """The user's ``package.module:function`` called with ``kwargs``, imported from ``root``.

    ``source_sha256`` is the module file's digest: whoever keys on the architecture (the export step) rebuilds
    when the model code changes, even when the weights it produced are byte-identical (an edited ``forward``).
    """

    family: Literal["factory"] = "factory"
    function: str
    kwargs: dict[str, Any] = {}
    root: Path
    source_sha256: str


Arch = Annotated[Union[MnistCnnArch, DigitsMobileArch, TorchvisionArch, EfficientNetLiteArch, FactoryArch],
                 Field(discriminator="family")]
