"""Float16 conversion with onnxruntime's ``convert_float_to_float16``."""

from __future__ import annotations

from typing import Any

from ..kinds.quant.fp16 import Fp16Quant
from .base import Step, StepContext, register
from .quiet import quiet


def sort_nodes(graph) -> None:
    """Order ``graph``'s nodes so each comes after the producers of what it reads, keeping the given order
    otherwise. ORT's float16 converter appends the Casts it inserts at the end of the graph: ORT sorts on load,
    but onnx's checker (and tools that read the graph in order) refuse the model."""
    import heapq

    produced = {out: i for i, n in enumerate(graph.node) for out in n.output if out}

    def reads(node) -> list[str]:  # a subgraph's nodes read outer values too
        names = list(node.input)
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                names += [r for sub in g.node for r in reads(sub)]
        return names

    waits = [{produced[r] for r in reads(n) if r in produced} - {i} for i, n in enumerate(graph.node)]
    users: dict[int, list[int]] = {}
    for i, deps in enumerate(waits):
        for d in deps:
            users.setdefault(d, []).append(i)
    ready = [i for i, deps in enumerate(waits) if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, []):
            waits[u].discard(i)
            if not waits[u]:
                heapq.heappush(ready, u)
    if len(order) == len(graph.node):  # else a cycle: leave the graph as it is for the checker to name
        nodes = [graph.node[i] for i in order]
        graph.ClearField("node")
        graph.node.extend(nodes)


@register
class OrtFp16ConvertStep(Step):
    """Float tensors, initializers and arithmetic to float16; the op types of ``op_block_list`` stay float32."""

    kind = "quantize.ort_fp16"
    Params = Fp16Quant
    inputs = ("model",)
    outputs = {"model": "model.fp16.onnx"}
    libraries = ("onnx", "onnxruntime", "numpy")

    def run(self, ctx: StepContext, p: Fp16Quant) -> dict[str, Any]:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16 as convert

        with quiet("onnxruntime", loggers=("onnxruntime",)):
            model = convert(onnx.load(str(ctx.inputs["model"])), keep_io_types=p.keep_io_types,
                            op_block_list=p.op_block_list)
        sort_nodes(model.graph)
        onnx.checker.check_model(model)
        onnx.save(model, str(ctx.out("model")))
        halves = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
        floats = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
        if not halves:
            ctx.note("no initializer was converted to float16 (check quant.op_block_list)")
        return {"nodes": len(model.graph.node), "fp16_initializers": halves, "fp32_initializers": floats,
                "bytes": ctx.out("model").stat().st_size}
