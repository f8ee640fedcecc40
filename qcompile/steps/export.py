"""Export a torch model to one self-contained ONNX file, checked and compared with torch."""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

from .base import Step, StepContext, StepParams, register


class ExportParams(StepParams):
    arch: dict[str, Any]
    input_shape: tuple[int, ...]
    opset: int
    dynamic_batch: bool
    tolerance: float


class ExportMismatch(RuntimeError):
    """The exported graph computes something else than the torch model."""


@register
class ExportOnnx(Step):
    """torch -> ONNX with the dynamo exporter, checked and compared with torch."""

    kind = "export.onnx"
    version = 2  # 2: stack traces (absolute source paths) stripped from node metadata
    Params = ExportParams
    inputs = ("weights",)
    outputs = {"model": "model.onnx"}
    libraries = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime")

    def run(self, ctx: StepContext, p: ExportParams) -> dict[str, Any]:
        import numpy as np
        import onnx
        import onnxruntime as ort
        import torch

        from ..models import build_torch_model
        from .model import load_into, read_state_dict

        model = build_torch_model(p.arch)
        load_into(model, read_state_dict(ctx.inputs["weights"]), p.arch.get("name") or p.arch["family"])
        model.eval()
        torch.manual_seed(0)
        # An example batch of 2: a batch of 1 lets the exporter specialise the batch dimension to 1.
        example = torch.randn(2, *p.input_shape)
        kwargs: dict[str, Any] = {}
        if p.dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        path = ctx.out("model")
        log = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=p.opset,
                              external_data=False, input_names=["input"], output_names=["logits"], **kwargs)
        proto = onnx.load(str(path))
        _strip_stack_traces(proto)
        onnx.save(proto, str(path))
        onnx.checker.check_model(proto, full_check=True)
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        if opset != p.opset:
            ctx.note(f"asked opset {p.opset}, the exporter produced opset {opset}")

        # Compare on a batch size other than the example's, which also proves the batch axis is dynamic.
        check = torch.randn(3 if p.dynamic_batch else 2, *p.input_shape)
        with torch.no_grad():
            expected = model(check).numpy()
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: check.numpy()})[0]
        diff = float(np.max(np.abs(got - expected)))
        if diff > p.tolerance:
            raise ExportMismatch(f"ONNX output differs from torch by {diff:.2e} (> model.export.tolerance "
                                 f"{p.tolerance:.0e})")
        return {"opset": opset, "max_abs_diff": diff, "dynamic_batch": p.dynamic_batch}


def _strip_stack_traces(proto) -> None:
    """Drop the exporter's per-node stack traces: they hold absolute source paths, so the same model exported
    from another checkout or venv would get other bytes (and miss a shared cache, and fail reproduce)."""
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    for node in nodes:
        keep = [m for m in node.metadata_props if m.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
