"""``data.kind=photos``: scikit-image's real photos (chelsea the cat, a coffee cup...), offline, so a pretrained
ImageNet model is measured on real photos without a download. Needs the ``images`` extra."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import Field

from ...errors import BadInput
from ...graph import Node, Ref
from ...steps import images as steps
from ..registry import register
from ..section import Kind
from ._split import image_contract


@register("data")
class PhotosData(Kind):
    """skimage.data's photos: the ones with an unambiguous ImageNet class are the evaluation set (labelled), the
    others (textures, microscopy, text, astronaut, rocket...) calibrate."""

    kind: Literal["photos"]
    labelled: bool = Field(True, description="evaluate against the ImageNet labels (the model must classify the "
                                             "1,000 ImageNet classes); false: fidelity to FP32 only")

    def compile(self, b) -> None:
        if importlib.util.find_spec("skimage") is None:
            raise BadInput("the photos need scikit-image: pip install 'qcompile[images]'", key="data.kind")
        image, pre = image_contract(self, b, "photos")
        calib = b.get("calib.samples", 0)
        if calib > len(steps.PHOTOS_UNLABELLED):
            raise BadInput(f"asks {calib} calibration photos; {len(steps.PHOTOS_UNLABELLED)} are set aside for "
                           "calibration", key="quant.calibration.samples")
        out = b.need("signature", self).outputs[0].shape
        if self.labelled and (not out or out[-1] != 1000):
            raise BadInput(f"the photos are labelled with ImageNet classes; the model has {out[-1] if out else '?'} "
                           "outputs (set data.labelled=false to measure fidelity only)", key="data.labelled")
        b.add(Node("data", steps.PhotosData.kind,
                   steps.PhotosParams(input=image, preprocess=pre, calib_samples=calib,
                                      labels=steps.PHOTO_LABELS, unlabelled=steps.PHOTOS_UNLABELLED,
                                      labelled=self.labelled)))
        b.provide("samples.calib", Ref("data", "calib"), self)
        b.provide("samples.eval", Ref("data", "eval"), self)
        b.provide("samples.labels", self.labelled, self)
