"""What the data kinds share: the split sizes every data section has, and labelled image sources."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from ...errors import BadInput
from ...steps import data as steps
from ..section import Kind


class SplitData(Kind):
    """A data section whose samples are split, seeded, into evaluation and calibration (never overlapping)."""

    eval_samples: PositiveInt = Field(100, description="samples held out for evaluation")
    seed: int = Field(0, description="seed of the split")

    def calib_samples(self, b) -> int:
        """How many calibration samples the quant section asked for (0 when it calibrates nothing)."""
        return b.get("calib.samples", 0)


def image_split_params(section: SplitData, b, size: int, source: str) -> steps.ImageSplitParams:
    """Params of a labelled image data step, normalised with the model's preprocessing contract."""
    sig = b.need("signature", section)
    image = sig.single_image_input
    if image is None:
        raise BadInput(f"{source} are images; the model takes {sig.input_names}", key="data.kind")
    if section.eval_samples >= size:
        raise BadInput(f"{source} has {size} samples; asked {section.eval_samples}", key="data.eval_samples")
    calib, left = section.calib_samples(b), size - section.eval_samples
    if calib > left:
        raise BadInput(f"asks {calib} but only {left} {source} samples are left after the {section.eval_samples} "
                       "held out for evaluation", key="quant.calibration.samples")
    norm = b.get("preprocess") or {"scale": 1 / 255, "mean": [0.0], "std": [1.0]}
    return steps.ImageSplitParams(input=image, eval_samples=section.eval_samples, calib_samples=calib,
                                  seed=section.seed, scale=norm["scale"], mean=norm["mean"], std=norm["std"])
