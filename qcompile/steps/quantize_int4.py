"""Weight-only INT4 with onnxruntime's MatMulNBitsQuantizer: default (ORT's blockwise rounding), RTN, HQQ or GPTQ."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from ..errors import BadInput
from ..kinds.quant.exclude import resolve
from ..kinds.quant.int4_weight import NBITS_OPS, Int4WeightQuant, as_names_map, candidates, nothing_to_quantize
from .arrays import count, fixed_batch, load_samples, model_batches
from .base import Step, StepContext, register
from .contrib_ops import import_contrib_domain
from .quiet import quiet

_QUANTIZER = "onnxruntime.quantization.matmul_nbits_quantizer"
GPTQ_BATCH = 8  # samples per GPTQ forward pass: fixed, so the Hessians (and the model) never depend on the machine


def import_quantizer():
    """ORT's ``matmul_nbits_quantizer`` module, imported without what its import does to the process's logging.

    The module calls ``logging.basicConfig(level=INFO)`` when first imported: the root logger would keep a stderr
    handler and INFO level for the rest of the process (every library's INFO records printed, in a build or in the
    user's own program). qcompile never reconfigures the root logger, so both are given back.
    """
    import importlib
    import logging
    import sys

    if _QUANTIZER in sys.modules:
        return sys.modules[_QUANTIZER]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return importlib.import_module(_QUANTIZER)
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)


def _reader(path, model):
    """ORT's ``CalibrationDataReader`` over the calibration samples in ``path``: named arrays, ``GPTQ_BATCH``
    samples at a time (padded where the model's batch is fixed). GPTQ deep-copies the reader before reading it, so
    it holds plain arrays and an index, nothing open."""
    from onnxruntime.quantization import CalibrationDataReader

    inputs, _ = load_samples(path)
    if count(inputs) == 0:
        raise BadInput("algorithm=gptq needs calibration samples; the calibration split is empty",
                       key="quant.gptq.samples")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    feeds = [feed for feed, _ in model_batches(inputs, GPTQ_BATCH, fixed_batch([d.dim_value or d.dim_param
                                                                                  for d in dims]))]

    class Samples(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self) -> dict[str, Any] | None:
            self.i += 1
            return feeds[self.i - 1] if self.i <= len(feeds) else None

    return Samples()


def _config(q: Int4WeightQuant, mnq, reader):
    """The algorithm's config. RTN and GPTQ read the block size, symmetry and accuracy level from the quantizer
    (``MatMulNBitsQuantizer(block_size=...)``), not from their configs; the default and HQQ configs carry their own.
    The step gives both places the same values."""
    ops = tuple(q.op_types)
    match q.algorithm:
        case "default":
            return mnq.DefaultWeightOnlyQuantConfig(block_size=q.block_size, is_symmetric=q.symmetric,
                                                    accuracy_level=q.accuracy_level, op_types_to_quantize=ops)
        case "rtn":
            return mnq.RTNWeightOnlyQuantConfig(op_types_to_quantize=ops)
        case "hqq":
            return mnq.HQQWeightOnlyQuantConfig(block_size=q.block_size, op_types_to_quantize=ops)
        case "gptq":
            return mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, percdamp=q.gptq.percdamp,
                                                 actorder=q.gptq.actorder, op_types_to_quantize=ops)
    raise AssertionError(q.algorithm)


def _set_accuracy_level(model, level: int) -> None:
    """Give every MatMulNBits the recipe's accuracy level (HQQ writes none); 0 means unset, as ORT writes it."""
    import onnx

    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for a in [a for a in node.attribute if a.name == "accuracy_level"]:
                node.attribute.remove(a)
            if level:
                node.attribute.append(onnx.helper.make_attribute("accuracy_level", level))


@contextlib.contextmanager
def _cpu_only(hqq: bool) -> Iterator[None]:
    """HQQ solves on a CUDA device, in float16, whenever torch sees one: a machine with a GPU would write other
    bytes under the same key. Hold it to the CPU solver (float32), which every machine has."""
    if not hqq:
        yield
        return
    from unittest import mock

    with mock.patch("torch.cuda.is_available", return_value=False):
        yield


def _to_opset_21(ctx: StepContext, model):
    """The model converted to opset 21 (int4 tensors), which quantizing Gather needs; ORT would only relabel it."""
    import onnx
    from onnx import version_converter

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=21)
    if opset >= 21:
        return model
    try:
        converted = version_converter.convert_version(model, 21)
        onnx.checker.check_model(converted)
    except Exception as e:  # the converter's errors have no common base
        msg = " ".join(str(e).split())[:160] or type(e).__name__
        raise BadInput(f"quantizing Gather needs opset 21 (int4 tensors); the model is opset {opset} and onnx's "
                       f"version converter failed ({msg}): drop Gather from quant.op_types",
                       key="quant.op_types") from None
    ctx.note(f"Gather quantization: the model was converted from opset {opset} to 21 (int4 tensors)")
    return converted


@register
class OrtInt4QuantizeStep(Step):
    """``MatMulNBitsQuantizer``: MatMul weights (and, asked, Gather tables) to 4-bit blocks; activations stay float."""

    kind = "quantize.ort_int4"
    Params = Int4WeightQuant
    inputs = ("model", "data")  # data: the calibration samples, algorithm=gptq only
    outputs = {"model": "model.int4.onnx"}
    libraries = ("onnx", "onnxruntime", "numpy", "torch")  # torch: HQQ's solver
    # The sample count reaches the key as the calibration split's digest (and means nothing to other algorithms).
    unkeyed = ("gptq.samples",)

    def run(self, ctx: StepContext, p: Int4WeightQuant) -> dict[str, Any]:
        import warnings

        import onnx

        model = onnx.load(str(ctx.inputs["model"]))
        nodes = [(n.name, n.op_type) for n in model.graph.node]
        excluded = resolve(p.exclude, as_names_map(nodes)) if p.exclude else []
        if not candidates(p, nodes):  # a torch model's nodes are known only now
            raise nothing_to_quantize(p, {op for _, op in nodes}, "model.fp32.onnx has none")
        if "Gather" in p.op_types:
            model = _to_opset_21(ctx, model)
        mnq = import_quantizer()
        reader = _reader(ctx.inputs["data"], model) if p.algorithm == "gptq" else None
        with quiet("onnxruntime", loggers=("onnxruntime", "neural_compressor")), warnings.catch_warnings(), \
                _cpu_only(p.algorithm == "hqq"):
            warnings.simplefilter("ignore")  # HQQ hands torch a read-only array: a warning about its own code
            quantizer = mnq.MatMulNBitsQuantizer(model, bits=4, block_size=p.block_size, is_symmetric=p.symmetric,
                                                 accuracy_level=p.accuracy_level, nodes_to_exclude=excluded,
                                                 algo_config=_config(p, mnq, reader))
            quantizer.process()
        out = quantizer.model.model
        import_contrib_domain(out)  # RTN and GPTQ write MatMulNBits without importing its domain
        _set_accuracy_level(out, p.accuracy_level)
        onnx.checker.check_model(out)
        counts = {op: sum(1 for n in out.graph.node if n.op_type == q) for op, q in NBITS_OPS.items()}
        if not sum(counts.values()):
            raise nothing_to_quantize(p, {op for _, op in nodes},
                                      f"no {'/'.join(p.op_types)} of model.fp32.onnx has one (its weights are "
                                      "computed at run time, or have more than 2 dimensions)")
        onnx.save(out, str(ctx.out("model")))
        left = [n.name for n in out.graph.node if n.op_type in p.op_types and n.name not in excluded]
        if left:
            ctx.note(f"{len(left)} {'/'.join(p.op_types)} node(s) stayed float (no constant 2-D weight), "
                     f"e.g. {left[0]}")
        return {"nodes": len(out.graph.node), "int4_matmuls": counts["MatMul"], "int4_gathers": counts["Gather"],
                "float_nodes": len(excluded), "bytes": ctx.out("model").stat().st_size}
