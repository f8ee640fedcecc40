"""What the data kinds share: the split sizes every data section has, and labelled image sources (the params of
their steps: the data section itself, plus the model's image input and normalisation)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import Field, PositiveInt

from ...errors import BadInput
from ...graph import Ref, StepParams
from ...signature import TensorSpec
from ..section import Kind, Normalize
from ._seed import Seed


class SplitData(Kind):
    """A data section whose samples are split, seeded, into evaluation and calibration (never overlapping)."""

    eval_samples: PositiveInt = Field(100, description="samples held out for evaluation")
    seed: Seed = Field(0, description="seed of the split")

    def calib_samples(self, b) -> int:
        """How many calibration samples the quant section asked for (0 when it calibrates nothing)."""
        return b.get("calib.samples", 0)


def image_contract(section: Kind, b, source: str) -> tuple[TensorSpec, dict[str, Any]]:
    """The model's single image input and its preprocessing contract (with the concrete input shape), or bad input
    naming the recipe key when the model takes no image or states no normalisation."""
    sig = b.need("signature", section)
    image = sig.single_image_input
    if image is None:
        raise BadInput(f"{source} are images; the model takes {sig.input_names}", key="data.kind")
    if not all(isinstance(d, int) for d in image.sample_shape):
        raise BadInput(f"{source} images need a concrete image size; the model's input {image.name!r} is "
                       f"{list(image.sample_shape)} (set model.input_shape)", key="model.input_shape")
    pre = b.get("preprocess")
    if pre is None or pre.get("normalize") is None:
        # The same normalisation must reach calibration and the bundle: never assume one for the data alone.
        raise BadInput(f"{source} are images; say how the model normalises pixels (model.normalize: "
                       "{scale, mean, std}) so calibration and the deployment bundle use the same",
                       key="model.normalize")
    norm, channels = pre["normalize"], image.sample_shape[0]
    if {len(norm["mean"]), len(norm["std"])} - {1, channels}:
        raise BadInput(f"has {len(norm['mean'])} means and {len(norm['std'])} stds for a {channels}-channel input",
                       key="model.normalize")
    return image, {**pre, "input_shape": list(image.sample_shape)}


class ImageSplitParams(StepParams):
    """A labelled image source split into train / calibration / evaluation, normalised as the model expects.

    A kind whose step takes these subclasses them with its own section as ``data``, so every option of that section
    is in the step's key."""

    data: SplitData
    input: TensorSpec  # the model's image input, with a concrete (C, H, W)
    calib_samples: int  # what the quant section asked for (0: it calibrates nothing)
    normalize: Normalize  # the model's


P = TypeVar("P", bound=ImageSplitParams)


def image_split_params(section: SplitData, b, size: int, source: str, params: type[P]) -> P:
    """``params`` of a labelled image data step of ``size`` samples, normalised with the model's contract."""
    image, pre = image_contract(section, b, source)
    if section.eval_samples >= size:
        raise BadInput(f"{source} has {size} samples; asked {section.eval_samples}", key="data.eval_samples")
    calib, left = section.calib_samples(b), size - section.eval_samples
    if calib > left:
        raise BadInput(f"asks {calib} but only {left} {source} samples are left after the {section.eval_samples} "
                       "held out for evaluation", key="quant.calibration.samples")
    return params(data=section, input=image, calib_samples=calib, normalize=Normalize(**pre["normalize"]))


def provide_splits(section: Kind, b, node: str, splits: tuple[str, ...], labels: bool) -> None:
    """Provide ``samples.<split>`` for the node's outputs, and whether the evaluation samples are labelled."""
    for split in splits:
        b.provide(f"samples.{split}", Ref(node, split), section)
    b.provide("samples.labels", labels, section)
