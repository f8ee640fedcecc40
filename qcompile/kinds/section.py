"""The base of every recipe section, and the field types several kinds share."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, FilePath

# User files are kept as absolute paths, so a lockfile rebuilds from any working directory.
UserFile = Annotated[FilePath, AfterValidator(lambda p: p.resolve())]


class Section(BaseModel):
    """Base of every recipe section: immutable, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Kind(Section):
    """A registered section kind (``model.kind=torchvision``...): its fields, and how it compiles into nodes.

    ``declare`` provides the facts other sections may read before any node exists (a model's signature, a
    target's quantization defaults); ``compile`` adds nodes to the builder, reading and providing ports.
    """

    group: ClassVar[str]

    @property
    def label(self) -> str:
        """How messages name this section: ``model.kind=onnx``."""
        return f"{self.group}.kind={getattr(self, 'kind', '?')}"

    def declare(self, b) -> None:  # noqa: B027 - optional hook
        """Provide facts (ports without nodes) to the builder."""

    def compile(self, b) -> None:  # noqa: B027 - optional hook
        """Add this section's nodes to the builder."""


class Normalize(Section):
    """Preprocessing as trained: ``(pixel * scale - mean) / std`` per channel, CHW layout.

    It goes into the deployment bundle's ``preprocess.json``, so the app normalises exactly as training did.
    """

    scale: float = 1 / 255
    mean: list[float] = [0.0]
    std: list[float] = [1.0]


IMAGENET = Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


class ExportSpec(Section):
    """How a torch model becomes ONNX."""

    opset: int = Field(18, ge=13, le=23, description="ONNX opset of the exported model")
    dynamic_batch: bool = Field(True, description="export the batch dimension as dynamic")
    tolerance: float = Field(1e-3, gt=0, description="max abs difference allowed between torch and ONNX outputs")
