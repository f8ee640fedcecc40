"""``data.kind=factory``: the user's own dataloader, ``package.module:function`` called with keyword arguments and
returning (or yielding) dicts of numpy arrays keyed by the model's input names, one batch or one sample each, with
optional labels under the reserved key ``labels``. The key covers the module file's source and the kwargs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ...errors import BadInput
from ...graph import Node, StepParams
from ...signature import TensorSpec
from ..registry import register
from ..section import UserDir
from ..user_code import function_source
from ._split import SplitData, provide_splits

LABELS_KEY = "labels"  # the reserved key of a batch dict holding its labels (documented in docs/recipes.md)


@register("data")
class FactoryData(SplitData):
    """Your own dataloader: ``function: mydata.loader:batches`` returns or yields ``{input name: array, "labels":
    array}`` dicts; ``kwargs`` are passed to it."""

    kind: Literal["factory"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                          description="package.module:function returning or yielding dicts of numpy arrays keyed by "
                                      "the model's input names (one batch or one sample each)")
    kwargs: dict[str, Any] | None = Field(None, description="keyword arguments of the function (JSON values)")
    root: UserDir = Field(Path("."), description="folder the module is imported from (default: the working "
                                                 "directory)")
    splits: Literal["seeded", "function"] = Field(
        "seeded", description="seeded: the function is called once and its samples split (seeded, disjoint) into "
                              "evaluation and calibration; function: it is called with split='calib' and "
                              "split='eval' and gives each split itself")
    labels: bool = Field(True, description="the dicts hold labels under the key 'labels' (integers, one per sample, "
                                           "for a classifier; any shape otherwise); false: unlabelled")

    def _source(self) -> Path:
        return function_source(self.function, self.root, "data.function", "data.root")

    def compile(self, b) -> None:
        sig = b.need("signature", self)
        if LABELS_KEY in sig.input_names:
            raise BadInput(f"the model has an input named {LABELS_KEY!r}, the key data.kind=factory reserves for "
                           "labels", key="data.kind")
        last = sig.outputs[0].shape[-1] if sig.outputs[0].shape else None
        classes = last if sig.task == "classification" and isinstance(last, int) else None
        b.add(Node("data", "data.factory", DataFactoryParams(
            data=self, source=self._source(), inputs=sig.inputs, classification=sig.task == "classification",
            classes=classes, calib_samples=self.calib_samples(b))))
        provide_splits(self, b, "data", ("calib", "eval"), labels=self.labels)


class DataFactoryParams(StepParams):
    """Params of the ``data.factory`` step: the section, the module file, and the model's inputs."""

    data: FactoryData
    source: Path  # the module file: its content digest joins the key
    inputs: tuple[TensorSpec, ...]  # the model's
    classification: bool  # labels must then be one integer per sample
    classes: int | None = None  # a classifier's class count: labels must fall in 0..classes-1
    calib_samples: int
