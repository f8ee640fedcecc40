"""``model.kind=factory``: the user's own model code, ``package.module:function`` called with keyword arguments and
returning an ``nn.Module`` (optionally loaded with a state_dict file). The key covers the module file's source."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from ...errors import BadInput
from ...graph import Node, Ref, StepParams
from ...models.arch import FactoryArch
from ...signature import Task, image_classifier
from ..registry import register
from ..section import ExportSpec, Kind, Normalize, Preprocess, UserDir, UserFile, contract
from ..user_code import function_source
from ._torch import provide_torch_model


@register("model")
class FactoryModel(Kind):
    """Your own model: ``function: mypkg.nets:build`` returns an ``nn.Module``; ``kwargs`` are passed to it."""

    requires: ClassVar[dict[str, str]] = {"torch": "torch"}

    kind: Literal["factory"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                          description="package.module:function returning a torch.nn.Module")
    kwargs: dict[str, Any] | None = Field(None, description="keyword arguments of the function (JSON values)")
    root: UserDir = Field(Path("."), description="folder the module is imported from (default: the working "
                                                 "directory)")
    weights: UserFile | None = Field(None, description="a state_dict file to load (weights_only=True); null: the "
                                                       "function's own weights")
    input_shape: tuple[PositiveInt, ...] = Field((3, 224, 224), min_length=1, description="the input's shape after "
                                                 "the batch axis ([C, H, W] for an image model)")
    num_classes: PositiveInt = Field(1000, description="size of the output after the batch axis: classes of a "
                                                       "classifier, values of a regression")
    task: Task = Field("classification", description="classification: top-1/top-5 against integer labels; other "
                                                     "(regression...): fidelity to FP32 plus eval.metrics")
    labels: list[str] | None = Field(None, description="class names, in output order (for the bundle and labels)")
    normalize: Normalize | None = Field(None, description="input normalisation (needed for image data and bundles)")
    preprocess: Preprocess | None = Field(None, description="resize, crop, interpolation, colour of image files")
    export: ExportSpec = ExportSpec()

    def _source(self) -> Path:
        return function_source(self.function, self.root, "model.function", "model.root")

    def declare(self, b) -> None:
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise BadInput(f"names {len(self.labels)} classes; num_classes is {self.num_classes}", key="model.labels")
        self._source()
        sig = image_classifier(self.input_shape, self.num_classes, self.export.dynamic_batch,
                               output_name="logits" if self.task == "classification" else "prediction")
        b.provide("signature", sig if self.task == "classification" else sig.model_copy(update={"task": self.task}),
                  self)
        b.provide("preprocess", contract(self.input_shape, self.normalize, self.preprocess), self)
        if self.labels is not None:
            b.provide("labels", list(self.labels), self)

    def compile(self, b) -> None:
        source = self._source()
        arch = FactoryArch(function=self.function, kwargs=self.kwargs or {}, root=self.root,
                           source_sha256=hashlib.sha256(source.read_bytes()).hexdigest())
        b.add(Node("model", "model.factory", FactoryParams(model=self, arch=arch, source=source)))
        provide_torch_model(self, b, Ref("model", "module"), arch, self.export)


class FactoryParams(StepParams):
    """Params of the ``model.factory`` step: the section, the architecture it names, and the module file."""

    model: FactoryModel
    arch: FactoryArch
    source: Path  # the module file: its content digest joins the key
