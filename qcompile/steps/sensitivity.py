"""Which quantized nodes cost the most: every node's output compared between the INT8 and FP32 models on
calibration samples (ORT's ``qdq_loss_debug``), ranked worst first, under the FP32 model's node names."""

from __future__ import annotations

import json
import math
from typing import Any

from ..kinds.quant.static import Sensitivity
from .arrays import count, fixed_batch, load_samples, model_batches
from .base import Step, StepContext, register
from .quiet import quiet

BATCH = 8  # samples per run of the augmented models: every tensor of the model comes out of each run


@register
class OrtSensitivityStep(Step):
    """Per FP32 node: the SQNR of its output in the INT8 model against the FP32 model's (dB, lower is worse: the
    error that reached this point of the network) and of its weights; the worst first."""

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
        acts = {}
        with quiet("onnxruntime"):
            for which in ("float", "quantized"):
                augmented = ctx.workdir / f"augmented.{which}.onnx"
                dbg.modify_model_output_intermediate_tensors(str(ctx.inputs[which]), str(augmented))
                acts[which] = dbg.collect_activations(str(augmented), ctx.track(feeds, len(feeds), which))
                augmented.unlink()
            matched = dbg.create_activation_matching(acts["quantized"], acts["float"])
            act_err = dbg.compute_activation_error(matched)
            weight_err = dbg.compute_weight_error(
                dbg.create_weight_matching(str(ctx.inputs["float"]), str(ctx.inputs["quantized"])))
        rows = _by_fp32_node(float_model, names, act_err, weight_err)
        table = {"method": "activation SQNR of each node's output, INT8 model vs FP32 (ORT qdq_loss_debug "
                           "xmodel_err), lower is worse", "samples": n, "nodes": rows}
        ctx.out("sensitivity").write_text(json.dumps(table, indent=1))
        worst = rows[0] if rows else None
        return {"samples": n, "nodes": len(rows),
                "worst": {k: worst[k] for k in ("name", "op_type", "activation_sqnr_db")} if worst else None}


def _dims(value_info) -> list[Any]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


# Ops that only move or pick values: their output keeps their input's scale, so keeping one in float recovers nothing.
MOVES_DATA = {"MaxPool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat",
              "Split", "Slice", "Gather", "Resize", "Pad", "Identity", "DepthToSpace", "SpaceToDepth", "Expand", "Tile"}


def _by_fp32_node(float_model, names: dict[str, Any], act_err: dict[str, dict[str, float]],
                  weight_err: dict[str, float]) -> list[dict[str, Any]]:
    """One row per quantized output: the FP32 nodes that made it (a Conv with the Relu ORT fused into its output),
    their worst activation and weight SQNR; worst first. Rows of ops that only move data are left out."""
    owner = {name: o["owner"] for name, o in names["optimized"].items()}
    op_type = {n["name"]: n["op_type"] for n in names["nodes"]}
    nodes = {n.name: n for n in float_model.graph.node}
    made_by = {t: n.name for n in float_model.graph.node for t in n.output}
    used_by: dict[str, list[str]] = {}
    for n in float_model.graph.node:
        for t in n.input:
            used_by.setdefault(t, []).append(n.name)
    rows: dict[str, dict[str, Any]] = {}
    for tensor, err in act_err.items():
        made = made_by.get(tensor)
        if owner.get(made or "") is None or "xmodel_err" not in err:
            continue  # a graph input, or a tensor no FP32 node made
        chain = _fused_chain(made, nodes, made_by, used_by, act_err)
        members = list(dict.fromkeys(owner[m] for m in chain if owner.get(m)))
        if all(op_type.get(m) in MOVES_DATA for m in members):
            continue
        key = members[0]
        row = rows.setdefault(key, {"name": key, "nodes": members, "op_type": "+".join(op_type.get(m, "?")
                                                                                     for m in members),
                                    "activation_sqnr_db": math.inf, "weight_sqnr_db": None, "tensor": tensor})
        if err["xmodel_err"] < row["activation_sqnr_db"]:
            row["activation_sqnr_db"], row["tensor"] = err["xmodel_err"], tensor
    member_of = {m: row for row in rows.values() for m in row["nodes"]}
    for weight, sqnr in weight_err.items():
        for node in used_by.get(weight, []):
            row = member_of.get(owner.get(node, ""))
            if row is not None and (row["weight_sqnr_db"] is None or sqnr < row["weight_sqnr_db"]):
                row["weight_sqnr_db"] = sqnr
    out = sorted(rows.values(), key=lambda r: (r["activation_sqnr_db"], r["name"]))
    for r in out:
        r["activation_sqnr_db"] = round(r["activation_sqnr_db"], 3)
        r["weight_sqnr_db"] = None if r["weight_sqnr_db"] is None else round(r["weight_sqnr_db"], 3)
    return out


def _fused_chain(made: str, nodes, made_by, used_by, act_err) -> list[str]:
    """``made`` and the producers above it whose outputs were not quantized on their own (ORT quantizes a Conv's
    output after the Relu it fuses): keeping that output in float means keeping all of them in float."""
    chain = [made]
    node = nodes[made]
    while node.input:
        up = made_by.get(node.input[0])
        if up is None or node.input[0] in act_err or used_by.get(node.input[0]) != [node.name]:
            break
        chain.insert(0, up)
        node = nodes[up]
    return chain
