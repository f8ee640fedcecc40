"""``quant.kind=none``: no quantization; the FP32 model is measured and bundled (a reference deployment)."""

from __future__ import annotations

from typing import Literal

from ..registry import register
from ..section import Kind


@register("quant")
class NoQuant(Kind):
    """Keep the FP32 model: the build measures it and its bundle holds it."""

    kind: Literal["none"]
