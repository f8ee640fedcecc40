"""A model's signature: named inputs and outputs with dtypes and shapes, and the task that selects metrics.

Shapes name their dynamic axes (``("batch", 3, 224, 224)``, ``("batch", "sequence")``); the first axis of every
input is the batch. Samples passed between steps are named arrays keyed by input name, so no step assumes a
single float input.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict

Dim = Union[int, str]
# classification: top-1/top-5 against labels; embedding: Spearman/Pearson against scored pairs; other (regression,
# detection, anything else): fidelity to FP32 (cosine, max abs difference) plus the recipe's own metrics.
Task = Literal["classification", "embedding", "other"]
DTypes = Literal["float32", "float16", "int64", "int32", "uint8", "int8", "bool"]


class TensorSpec(BaseModel):
    """One named tensor: element type and shape (a str dim is a named dynamic axis)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: DTypes = "float32"
    shape: tuple[Dim, ...]

    @property
    def sample_shape(self) -> tuple[Dim, ...]:
        """The shape of one sample: everything after the batch axis."""
        return self.shape[1:]

    @property
    def is_float(self) -> bool:
        """True for floating-point tensors."""
        return self.dtype.startswith("float")


class Signature(BaseModel):
    """What a model takes and gives, and its task (``classification``, ``embedding`` or ``other``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    task: Task = "classification"

    @property
    def input_names(self) -> list[str]:
        """Names of the inputs, in the model's order."""
        return [t.name for t in self.inputs]

    @property
    def single_image_input(self) -> TensorSpec | None:
        """The input when the model takes exactly one float (C, H, W) image tensor, else None."""
        if len(self.inputs) == 1 and self.inputs[0].is_float and len(self.inputs[0].sample_shape) == 3:
            return self.inputs[0]
        return None


def image_classifier(sample_shape: tuple[int, ...], num_classes: int, dynamic_batch: bool = True,
                     input_name: str = "input", output_name: str = "logits") -> Signature:
    """The signature of a classifier over one float image tensor (``sample_shape`` without the batch)."""
    batch: Dim = "batch" if dynamic_batch else 1
    return Signature(inputs=(TensorSpec(name=input_name, shape=(batch, *sample_shape)),),
                     outputs=(TensorSpec(name=output_name, shape=(batch, num_classes)),),
                     task="classification")
