"""``model.kind=torchvision``: a torchvision classifier, random-init, with its pretrained weights named as torchvision
names them (``weights: IMAGENET1K_V2``, read from the local torch hub cache, never downloaded), or with a local
state_dict file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator

from ...errors import BadInput
from ...graph import Node, Ref, StepParams
from ...models.arch import TorchvisionArch
from ...signature import image_classifier
from ..registry import register
from ..section import IMAGENET, ExportSpec, Kind, Normalize, Preprocess, contract
from ._torch import provide_torch_model
from ._torchvision_names import TorchvisionName
from ._torchvision_weights import DEFAULTS, IMAGENET_CATEGORIES, WEIGHTS

# torchvision's weights names: IMAGENET1K_V1, IMAGENET1K_SWAG_E2E_V1, DEFAULT. Anything else is a file path.
WEIGHTS_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def torch_hub_checkpoints() -> Path:
    """Where torchvision keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints`` (as ``torch.hub.get_dir``, without
    importing torch: planning stays light)."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(home).resolve() / "hub" / "checkpoints"


@register("model")
class TorchvisionModel(Kind):
    """A torchvision classifier: random-init (latency, fidelity), pretrained weights from the torch hub cache, or a
    local state_dict."""

    requires: ClassVar[dict[str, str]] = {"torch": "torch", "torchvision": "torch"}

    kind: Literal["torchvision"]
    name: TorchvisionName
    weights: str | Path | None = Field(
        None, description="torchvision's weights name (IMAGENET1K_V1, DEFAULT...: read from $TORCH_HOME/hub/"
                          "checkpoints, never downloaded; its transform and class names become the model's), or a "
                          "local state_dict file loaded with weights_only=True; null: random init")
    num_classes: PositiveInt = 1000
    input_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        None, description="(C, H, W); null: the named weights' crop size, else (3, 224, 224)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the random init when weights is null")
    normalize: Normalize | None = Field(None, description="input normalisation; null: the named weights' own, "
                                                          "else ImageNet's")
    preprocess: Preprocess | None = Field(None, description="resize, crop, interpolation; null: the named weights' "
                                                            "own transform, else resize straight to the input size")
    export: ExportSpec = ExportSpec()

    @field_validator("weights")
    @classmethod
    def _file_or_name(cls, v: str | Path | None) -> str | Path | None:
        if v is None or (isinstance(v, str) and WEIGHTS_NAME.match(v)):
            return v
        # A user file is kept as an absolute path, so a lockfile rebuilds from any working directory.
        path = Path(v).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"file not found: {v} (nor is it a torchvision weights name like IMAGENET1K_V1)")
        return path

    # ------------------------------------------------------------------ named weights
    @property
    def weights_name(self) -> str | None:
        """The torchvision weights name (DEFAULT resolved), or None for random init or a file."""
        if not isinstance(self.weights, str):
            return None  # random init, or a state_dict file
        name = DEFAULTS.get(self.name) if self.weights == "DEFAULT" else self.weights
        if (self.name, name) not in WEIGHTS:
            valid = sorted(w for m, w in WEIGHTS if m == self.name)
            have = f"valid: {', '.join([*valid, 'DEFAULT'])}" if valid else "torchvision has none for it"
            raise BadInput(f"{self.weights!r} is not a weights name of {self.name} ({have})", key="model.weights")
        return name

    def _named(self):
        """(file, resize, crop, interpolation, mean, std) of the named weights, or None."""
        name = self.weights_name
        return WEIGHTS[(self.name, name)] if name else None

    def _shape(self) -> tuple[int, int, int]:
        named = self._named()
        if self.input_shape is not None:
            return tuple(self.input_shape)  # type: ignore[return-value]
        return (3, named[2], named[2]) if named else (3, 224, 224)

    def _weights_file(self) -> Path | None:
        named = self._named()
        if named is None:
            return Path(self.weights) if self.weights else None
        hub = torch_hub_checkpoints()
        path = hub / named[0]
        if not path.is_file():
            raise BadInput(
                f"{self.weights} for {self.name} needs {named[0]} in {hub} (the torch hub cache, $TORCH_HOME/hub/"
                f"checkpoints); builds never download. On a connected machine run: python -c \"import torchvision; "
                f"torchvision.models.get_model_weights('{self.name}')['{self.weights_name}'].get_state_dict()\""
                f" and copy ~/.cache/torch/hub/checkpoints/{named[0]} into {hub}", key="model.weights")
        return path

    def declare(self, b) -> None:
        named = self._named()
        if named is not None and self.num_classes != 1000:
            raise BadInput(f"{self.weights} classifies 1000 ImageNet classes; num_classes is {self.num_classes}",
                           key="model.num_classes")
        self._weights_file()  # a missing hub file is named before any other section's complaint
        shape = self._shape()
        b.provide("signature", image_classifier(shape, self.num_classes, self.export.dynamic_batch), self)
        if named is not None:
            _, resize, crop, interp, mean, std = named
            norm = self.normalize or Normalize(mean=list(mean), std=list(std))
            pre = self.preprocess or Preprocess(resize=resize, crop=(crop, crop), interpolation=interp)
            b.provide("labels", list(IMAGENET_CATEGORIES), self)
        else:
            norm, pre = self.normalize or IMAGENET, self.preprocess
        b.provide("preprocess", contract(shape, norm, pre), self)

    @property
    def arch(self) -> TorchvisionArch:
        """The network this section names (without its weights)."""
        return TorchvisionArch(name=self.name, num_classes=self.num_classes)

    def compile(self, b) -> None:
        b.add(Node("model", "model.torchvision",
                   TorchvisionParams(model=self, weights_file=self._weights_file(), pretrained=self.weights_name)))
        provide_torch_model(self, b, Ref("model", "module"), self.arch, self.export)


class TorchvisionParams(StepParams):
    """Params of the ``model.torchvision`` step: the section, with its weights resolved to a file."""

    model: TorchvisionModel
    weights_file: Path | None = None  # a state_dict file: the user's, or named weights in the torch hub cache
    pretrained: str | None = None  # torchvision's weights name when ``weights_file`` is its file in the hub cache
