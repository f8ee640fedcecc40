"""What torch model kinds share: the ``torch_model`` port and the export node that turns the module their model step
built into the FP32 ONNX model."""

from __future__ import annotations

from dataclasses import dataclass

from ...graph import Node, Ref, StepParams
from ...models.arch import Arch
from ...signature import Signature
from ..section import ExportSpec, Kind


@dataclass(frozen=True)
class TorchModel:
    """The ``torch_model`` port: the whole ``nn.Module`` a node stored (``qcompile.models.save_module``), and the
    architecture it is."""

    module: Ref
    arch: Arch


class ExportParams(StepParams):
    """Params of the ``export.onnx`` step: the model section's ``export`` options, for the module of ``arch``."""

    arch: Arch  # in the key: a factory's source digest re-exports an edited forward() with unchanged weights
    signature: Signature  # the model's: input and output names, dtypes, named dynamic axes
    export: ExportSpec


def provide_torch_model(section: Kind, b, module: Ref, arch: Arch, spec: ExportSpec) -> None:
    """Provide ``torch_model``, add the export node and provide ``onnx.fp32``."""
    b.provide("torch_model", TorchModel(module, arch), section)
    b.add(Node("export", "export.onnx", ExportParams(arch=arch, signature=b.need("signature", section), export=spec),
               inputs={"module": module}, publish={"model": "model.fp32.onnx"}))
    b.provide("onnx.fp32", Ref("export", "model"), section)
