"""Which quantized nodes cost the most: every quantized tensor compared between the INT8 and FP32 models on
calibration samples (ORT's ``qdq_loss_debug``), grouped by the FP32 nodes a user can keep in float, worst first."""

from __future__ import annotations

import json
import math
from typing import Any

from ..kinds.quant.static import Sensitivity
from .arrays import count, fixed_batch, load_samples, model_batches
from .base import Step, StepContext, register
from .quiet import quiet

BATCH = 8  # samples per run of the augmented models: every tensor of the model comes out of each run
# Ops that only move or pick values: their output keeps their input's scale, so keeping one in float recovers nothing.
MOVES_DATA = {"MaxPool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat",
              "Split", "Slice", "Gather", "Resize", "Pad", "Identity", "DepthToSpace", "SpaceToDepth", "Expand", "Tile"}


@register
class OrtSensitivityStep(Step):
    """One row per group of FP32 nodes whose output ORT quantizes (a Conv with the Relu fused into it): the SQNR of
    the noise its own quantized tensors add (local), of its output against FP32 (cumulative) and of its weights."""

    kind = "sensitivity.ort_qdq"
    Params = Sensitivity
    inputs = ("float", "quantized", "names", "data")
    outputs = {"sensitivity": "sensitivity.json"}
    libraries = ("onnx", "onnxruntime", "numpy")
    unkeyed = ("enabled",)  # whether the table is shown changes nothing in it

    def run(self, ctx: StepContext, p: Sensitivity) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization import qdq_loss_debug as dbg

        names = json.loads(ctx.inputs["names"].read_text())
        inputs, _ = load_samples(ctx.inputs["data"])
        n = min(p.samples, count(inputs))
        inputs = {k: v[:n] for k, v in inputs.items()}
        float_model = onnx.load(str(ctx.inputs["float"]), load_external_data=False)
        fixed = fixed_batch(list(_dims(float_model.graph.input[0])))
        feeds = [feed for feed, _ in model_batches(inputs, BATCH, fixed)]
        import onnxruntime as ort

        # One thread, no graph optimisation (qdq_loss_debug's own default): sums in a fixed order, so a rebuild
        # writes the same table, byte for byte.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        acts = {}
        with quiet("onnxruntime"):
            for which in ("float", "quantized"):
                augmented = ctx.workdir / f"augmented.{which}.onnx"
                dbg.modify_model_output_intermediate_tensors(str(ctx.inputs[which]), str(augmented))
                acts[which] = dbg.collect_activations(str(augmented), ctx.track(feeds, len(feeds), which), options)
                augmented.unlink()
            matched = dbg.create_activation_matching(acts["quantized"], acts["float"])
        quantized = onnx.load(str(ctx.inputs["quantized"]))
        rows = _rows(float_model, names, matched, _weight_sqnr(float_model, quantized), p.rank)
        table = {"rank": p.rank, "samples": n, "nodes": rows,
                 "method": "SQNR in dB (lower is worse) on calibration samples: local = each quantized tensor of "
                           "the row before vs after its quantize/dequantize pair (its graph inputs included); "
                           "cumulative = the row's output in the INT8 model vs FP32 (ORT qdq_loss_debug)"}
        ctx.out("sensitivity").write_text(json.dumps(table, indent=1))
        worst = rows[0] if rows else None
        return {"samples": n, "nodes": len(rows),
                "worst": {k: worst[k] for k in ("name", "op_type", "local_sqnr_db")} if worst else None}


def _dims(value_info) -> list[Any]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def sqnr(reference, noisy) -> float:
    """Signal-to-quantization-noise ratio in dB of ``noisy`` against ``reference`` (lists of arrays).

    ORT's ``compute_signal_to_quantization_noice_ratio`` clamps both norms to epsilon, so a tensor that is all zeros
    in both models (a dead ReLU) reads 0 dB, the worst score; here it loses nothing."""
    import numpy as np

    a = np.concatenate([np.ravel(x) for x in reference]).astype(np.float64)
    b = np.concatenate([np.ravel(x) for x in noisy]).astype(np.float64)
    signal, noise = float(np.linalg.norm(a)), float(np.linalg.norm(a - b))
    if noise == 0.0:
        return math.inf  # nothing lost (a tensor that is all zeros, as a dead ReLU's, included)
    return float(20 * math.log10(max(signal, np.finfo(np.float32).tiny) / noise))


def _rows(float_model, names: dict[str, Any], matched: dict[str, dict[str, Any]], weights: dict[str, float],
          rank: str) -> list[dict[str, Any]]:
    """Rows of FP32 nodes with their SQNRs, worst first by ``rank``; rows of ops that only move data left out."""
    owner = {name: o["owner"] for name, o in names["optimized"].items()}
    op_type = {n["name"]: n["op_type"] for n in names["nodes"]}
    nodes = {n.name: n for n in float_model.graph.node}
    made_by = {t: n.name for n in float_model.graph.node for t in n.output}
    used_by: dict[str, list[str]] = {}
    for n in float_model.graph.node:
        for t in n.input:
            used_by.setdefault(t, []).append(n.name)
    rows: dict[str, dict[str, Any]] = {}
    member_of: dict[str, dict[str, Any]] = {}
    # qdq_loss_debug picks its tensors as a set: sorted here, so ties resolve the same in every process.
    for tensor, m in sorted(matched.items()):
        made = made_by.get(tensor)
        if made is None or owner.get(made) is None or not m.get("float"):
            continue
        chain = _fused_chain(made, nodes, made_by, used_by, matched)
        members = list(dict.fromkeys(owner[c] for c in chain if owner.get(c)))
        if all(op_type.get(c) in MOVES_DATA for c in members):
            continue
        row = rows.setdefault(members[0], {"name": members[0], "nodes": members,
                                           "op_type": "+".join(op_type.get(c, "?") for c in members),
                                           "local_sqnr_db": math.inf, "cumulative_sqnr_db": math.inf,
                                           "weight_sqnr_db": None, "tensor": tensor})
        pre = _as_applied(m["pre_qdq"], nodes[chain[-1]], float_model)
        row["local_sqnr_db"] = min(row["local_sqnr_db"], sqnr(pre, m["post_qdq"]))
        row["cumulative_sqnr_db"] = min(row["cumulative_sqnr_db"], sqnr(m["float"], m["post_qdq"]))
        for c in chain:
            member_of[c] = row
    graph_inputs = {i.name for i in float_model.graph.input}
    for tensor in sorted(graph_inputs & set(matched)):
        # A quantized model input is the first node's loss: keeping that node in float keeps the input float.
        for consumer in used_by.get(tensor, []):
            if consumer in member_of:
                row = member_of[consumer]
                row["local_sqnr_db"] = min(row["local_sqnr_db"], sqnr(matched[tensor]["pre_qdq"],
                                                                      matched[tensor]["post_qdq"]))
    for weight, value in weights.items():
        for node in used_by.get(weight, []):
            row = member_of.get(node)
            if row is not None and (row["weight_sqnr_db"] is None or value < row["weight_sqnr_db"]):
                row["weight_sqnr_db"] = value
    key = "local_sqnr_db" if rank == "local" else "cumulative_sqnr_db"
    out = sorted(rows.values(), key=lambda r: (r[key], r["name"]))
    for r in out:
        for k in ("local_sqnr_db", "cumulative_sqnr_db", "weight_sqnr_db"):
            r[k] = None if r[k] is None or math.isinf(r[k]) else round(r[k], 3)  # JSON has no infinity
    return out


def _fused_chain(made: str, nodes, made_by, used_by, matched) -> list[str]:
    """``made`` and the producers above it whose outputs were not quantized on their own (ORT quantizes a Conv's
    output after the Relu it fuses): keeping that output in float means keeping all of them in float."""
    chain = [made]
    node = nodes[made]
    while node.input:
        up = made_by.get(node.input[0])
        if up is None or node.input[0] in matched or used_by.get(node.input[0]) != [node.name]:
            break
        chain.insert(0, up)
        node = nodes[up]
    return chain


def _as_applied(pre: list[Any], last, model) -> list[Any]:
    """The tensor before quantization as the FP32 model computes it: where ORT fused a Relu or Clip into the
    quantization of a Conv's output, the raw Conv output is what reaches the quantizer, and its negative values are
    clipped by design, not lost to rounding."""
    import numpy as np
    from onnx import numpy_helper

    if last.op_type == "Relu":
        return [np.maximum(x, 0) for x in pre]
    if last.op_type == "Clip":
        consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        lo = consts.get(last.input[1]) if len(last.input) > 1 else None
        hi = consts.get(last.input[2]) if len(last.input) > 2 else None
        return [np.clip(x, None if lo is None else float(lo), None if hi is None else float(hi)) for x in pre]
    return pre


def _weight_sqnr(float_model, quantized) -> dict[str, float]:
    """SQNR of each quantized weight against its FP32 values, dequantized along its own axis (per channel).

    Not ORT's ``create_weight_matching``: it read 0 dB for a per-channel Gemm weight whose error is 44 dB."""
    import numpy as np
    from onnx import numpy_helper

    floats = {i.name: numpy_helper.to_array(i) for i in float_model.graph.initializer}
    consts = {i.name: i for i in quantized.graph.initializer}
    out: dict[str, float] = {}
    for node in quantized.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in consts:
            continue
        q = numpy_helper.to_array(consts[node.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(consts[node.input[1]]).astype(np.float64)
        zero = numpy_helper.to_array(consts[node.input[2]]).astype(np.float64) if len(node.input) > 2 else 0.0
        source = next((n for n in (node.input[0].removesuffix("_quantized"),) if n in floats), None)
        if source is None or floats[source].shape != q.shape or q.ndim < 2:
            continue  # a bias, or a tensor quantized under another name
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if np.ndim(scale) == 1 and q.ndim > 1:
            shape[axis] = -1
            scale, zero = np.reshape(scale, shape), np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
        deq = (q - zero) * scale
        out[source] = sqnr([floats[source]], [deq])
    return out
