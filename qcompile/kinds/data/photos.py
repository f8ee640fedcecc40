"""``data.kind=photos``: scikit-image's real photos (chelsea the cat, a coffee cup...), offline, so a pretrained
ImageNet model is measured on real photos without a download. Needs the ``images`` extra."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ...errors import BadInput
from ...graph import Node, StepParams
from ...signature import TensorSpec
from ..registry import register
from ..section import Kind
from ._split import image_contract, provide_splits

# skimage.data's photos, with the ImageNet class a person looking at each would name where one class fits; the
# others are unlabelled (textures, microscopy, text...) and go to calibration.
PHOTO_LABELS = {"chelsea": 281,   # tabby, tabby cat: "Chelsea the cat", an orange tabby
                "coffee": 967,    # espresso: "Coffee cup", a photo courtesy of Pikolo Espresso Bar
                "clock": 892,     # wall clock: "Motion blurred clock", a wall clock
                "camera": 759}    # reflex camera: the cameraman's camera on its tripod
PHOTOS_UNLABELLED = ("astronaut", "rocket", "immunohistochemistry", "retina", "hubble_deep_field", "colorwheel",
                     "coins", "moon", "page", "text", "brick", "grass", "gravel", "horse", "logo", "microaneurysms",
                     "checkerboard")


@register("data")
class PhotosData(Kind):
    """skimage.data's photos: the ones with an unambiguous ImageNet class are the evaluation set (labelled), the
    others (textures, microscopy, text, astronaut, rocket...) calibrate."""

    requires: ClassVar[dict[str, str]] = {"skimage": "images"}

    kind: Literal["photos"]
    labelled: bool = Field(True, description="evaluate against the ImageNet labels (the model must classify the "
                                             "1,000 ImageNet classes); false: fidelity to FP32 only")

    def compile(self, b) -> None:
        image, pre = image_contract(self, b, "photos")
        calib = b.get("calib.samples", 0)
        if calib > len(PHOTOS_UNLABELLED):
            raise BadInput(f"asks {calib} calibration photos; {len(PHOTOS_UNLABELLED)} are set aside for "
                           "calibration", key="quant.calibration.samples")
        out = b.need("signature", self).outputs[0].shape
        if self.labelled and (not out or out[-1] != 1000):
            raise BadInput(f"the photos are labelled with ImageNet classes; the model has {out[-1] if out else '?'} "
                           "outputs (set data.labelled=false to measure fidelity only)", key="data.labelled")
        b.add(Node("data", "data.photos", PhotosParams(data=self, input=image, preprocess=pre, calib_samples=calib,
                                                       labels=PHOTO_LABELS, unlabelled=PHOTOS_UNLABELLED)))
        provide_splits(self, b, "data", ("calib", "eval"), labels=self.labelled)


class PhotosParams(StepParams):
    """Params of the ``data.photos`` step; the photo lists are in the key, so editing them rebuilds."""

    data: PhotosData
    input: TensorSpec  # the model's image input, with a concrete (C, H, W)
    preprocess: dict[str, Any]  # the model's contract, with the concrete input shape
    calib_samples: int
    labels: dict[str, int]
    unlabelled: tuple[str, ...]
