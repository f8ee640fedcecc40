"""Export the torch module a model step stored to one self-contained ONNX file, checked and compared with torch."""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

from ..errors import BadInput
from ..kinds.model._torch import ExportParams
from ..models import load_module
from ..signature import Signature
from .base import Step, StepContext, register


def example_inputs(signature: Signature, batch: int, seed: int):
    """One torch tensor per input: standard normal floats, ones for integer inputs (ids, masks)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for spec in signature.inputs:
        shape = (batch, *(d if isinstance(d, int) else 8 for d in spec.sample_shape))
        dtype = getattr(torch, spec.dtype)
        out.append(torch.randn(*shape, generator=gen).to(dtype) if spec.is_float else torch.ones(shape, dtype=dtype))
    return tuple(out)


def dynamic_shapes(signature: Signature):
    """torch.export dynamic shapes from the signature's named axes (one Dim per name, shared across inputs)."""
    import torch

    dims: dict[str, Any] = {}
    spec_dims = []
    for spec in signature.inputs:
        axes = {}
        for i, d in enumerate(spec.shape):
            if isinstance(d, str):
                if d not in dims:
                    dims[d] = torch.export.Dim(d, min=1, max=4096) if i == 0 else torch.export.Dim(d, min=2)
                axes[i] = dims[d]
        spec_dims.append(axes)
    return tuple(spec_dims) if dims else None


class ExportMismatch(RuntimeError):
    """The exported graph computes something else than the torch model."""


@register
class ExportOnnxStep(Step):
    """torch -> ONNX with the dynamo exporter, checked and compared with torch."""

    kind = "export.onnx"
    # 2: stack traces (absolute source paths) stripped; 3: names, dtypes and axes from the signature; 4: the model
    # step's module as input (not weights to load into a rebuilt one), a typed arch, the export section
    version = 4
    Params = ExportParams
    inputs = ("module",)
    outputs = {"model": "model.onnx"}
    libraries = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime")

    def run(self, ctx: StepContext, p: ExportParams) -> dict[str, Any]:
        import numpy as np
        import onnx
        import onnxruntime as ort
        import torch

        model = load_module(p.arch, ctx.inputs["module"]).eval()
        sig = p.signature
        dynamic = dynamic_shapes(sig)
        fixed = next((d for d in sig.inputs[0].shape[:1] if isinstance(d, int)), None)
        # An example batch of 2 for a dynamic batch: a batch of 1 lets the exporter specialise that axis to 1.
        example = example_inputs(sig, fixed or 2, seed=0)
        _runs_in_torch(model, example, sig)
        kwargs: dict[str, Any] = {"dynamic_shapes": dynamic} if dynamic else {}
        path = ctx.out("model")
        log = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(model, example, str(path), dynamo=True, opset_version=p.export.opset,
                                  external_data=False, input_names=sig.input_names,
                                  output_names=[o.name for o in sig.outputs], **kwargs)
            except Exception as e:  # the exporter raises many types; the model ran in torch, so it is the model's
                raise BadInput(f"torch.onnx.export cannot export this model: {_first_line(e)}", key="model") from e
        proto = onnx.load(str(path))
        _strip_stack_traces(proto)
        onnx.save(proto, str(path))
        onnx.checker.check_model(proto, full_check=True)
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        if opset != p.export.opset:
            ctx.note(f"asked opset {p.export.opset}, the exporter produced opset {opset}")

        # Compare on a batch size other than the example's, which also proves the batch axis is dynamic.
        check = example_inputs(sig, fixed or 3, seed=1)
        with torch.no_grad():
            expected = model(*check)
        expected = (expected if isinstance(expected, (tuple, list)) else [expected])[0].numpy()
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {spec.name: t.numpy() for spec, t in zip(sig.inputs, check)})[0]
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= p.export.tolerance:  # also catches NaN
            raise ExportMismatch(f"ONNX output differs from torch by {diff:.2e} (> model.export.tolerance "
                                 f"{p.export.tolerance:.0e})")
        return {"opset": opset, "max_abs_diff": diff, "dynamic_batch": fixed is None}


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:240]


def _runs_in_torch(model, example, sig: Signature) -> None:
    """The model must run on the signature's example in torch before export; if not, the recipe's shapes are
    wrong for this architecture (a ResNet given 8x8 images), which is bad input, not a qcompile bug."""
    import torch

    try:
        with torch.no_grad():
            model(*example)
    except Exception as e:  # any error from the user's architecture on these shapes
        shapes = ", ".join(f"{s.name} {list(s.sample_shape)}" for s in sig.inputs)
        raise BadInput(f"the model cannot run on inputs {shapes}: {_first_line(e)}", key="model.input_shape") from e


def _strip_stack_traces(proto) -> None:
    """Drop the exporter's per-node stack traces: they hold absolute source paths, so the same model exported
    from another checkout or venv would get other bytes (and miss a shared cache, and fail reproduce)."""
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    for node in nodes:
        keep = [m for m in node.metadata_props if m.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
