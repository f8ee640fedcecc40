"""Export a Hugging Face encoder (with its pooling) to one self-contained ONNX file, checked against torch at
another batch size and sequence length than the export's, with padded rows."""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

from ..errors import BadInput
from ..kinds.model.hf_encoder import HfEncoderExportParams
from .base import Step, StepContext, register
from .export import ExportMismatch, _first_line, _strip_stack_traces


def token_batch(names: list[str], batch: int, length: int, vocab: int, seed: int) -> dict[str, Any]:
    """Random token ids in the vocabulary with every row but the first padded at a random length: the mask and
    the pooling must ignore the padding, which a batch without padding never tests."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.int64)
    for row in range(1, batch):
        mask[row, int(torch.randint(1, length, (1,), generator=gen)):] = 0
    ids = ids * mask  # padding id 0, as BERT tokenizers pad
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {n: out[n] for n in names}


@register
class HfEncoderExportStep(Step):
    """transformers -> ONNX with the dynamo exporter: int64 inputs named as the tokenizer names them, dynamic batch
    and sequence, pooling and normalisation in the graph."""

    kind = "export.hf_encoder"
    # 2: fusion=transformer exports eager attention with the TorchScript exporter; 3: at opset 17 there
    version = 3
    Params = HfEncoderExportParams
    outputs = {"model": "model.onnx"}
    libraries = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime")
    file_fields = ("files",)
    # The weights and config reach the key as content, the opset resolved.
    unkeyed = ("model.path", "text.tokenizer", "model.export.opset")

    def run(self, ctx: StepContext, p: HfEncoderExportParams) -> dict[str, Any]:
        import numpy as np
        import onnx
        import onnxruntime as ort
        import torch

        from ..models.hf_encoder import load_encoder

        names, text = p.signature.input_names, p.text
        # ORT's transformer fusions match the graph the TorchScript exporter writes of eager attention; the dynamo
        # exporter's graph of the same model fuses no Attention (measured on all-MiniLM-L6-v2, docs/recipes.md).
        fusable = p.model.fusion == "transformer"
        try:
            model = load_encoder(p.model.path, names, text["pooling"], text["normalize"],
                                 attention="eager" if fusable else None)
        except (OSError, ValueError, KeyError) as e:  # a folder transformers cannot load
            raise BadInput(f"transformers cannot load {p.model.path}: {_first_line(e)}", key="model.path") from e
        vocab = int(model.encoder.config.vocab_size)
        batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("sequence", min=2,
                                                                                  max=text["max_positions"])
        example = token_batch(names, 2, 16, vocab, seed=0)
        path = ctx.out("model")
        log = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), torch.no_grad():
            warnings.simplefilter("ignore")
            outputs = [o.name for o in p.signature.outputs]
            try:
                if fusable:
                    axes = {n: {0: "batch", 1: "sequence"} for n in names}
                    axes[outputs[0]] = {0: "batch", 1: "sequence"} if text["pooling"] == "none" else {0: "batch"}
                    torch.onnx.export(model, tuple(example.values()), str(path), dynamo=False,
                                      opset_version=p.opset, input_names=names, output_names=outputs,
                                      dynamic_axes=axes)
                else:
                    torch.onnx.export(model, tuple(example.values()), str(path), dynamo=True,
                                      opset_version=p.opset, external_data=False, input_names=names,
                                      output_names=outputs,
                                      # one entry: forward takes the inputs as *tensors
                                      dynamic_shapes=(tuple({0: batch, 1: seq} for _ in names),))
            except Exception as e:  # the exporter raises many types
                raise BadInput(f"torch.onnx.export cannot export this encoder: {_first_line(e)}",
                               key="model") from e
        proto = onnx.load(str(path))
        _strip_stack_traces(proto)
        onnx.save(proto, str(path))
        onnx.checker.check_model(proto, full_check=True)

        check = token_batch(names, 3, 37, vocab, seed=1)
        with torch.no_grad():
            expected = model(*check.values()).numpy()
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {n: t.numpy() for n, t in check.items()})[0]
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= p.model.export.tolerance:  # also catches NaN
            raise ExportMismatch(f"ONNX output differs from torch by {diff:.2e} at batch 3, sequence 37 (> "
                                 f"model.export.tolerance {p.model.export.tolerance:.0e})")
        return {"max_abs_diff": diff, "checked_at": {"batch": 3, "sequence": 37}, "pooling": text["pooling"],
                "exporter": "torchscript" if fusable else "dynamo",
                "normalize": text["normalize"], "vocab": vocab}
