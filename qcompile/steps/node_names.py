"""Node names a user can use: the names ``artifacts/model.fp32.onnx`` shows (netron, the sensitivity table,
``qcompile plan``), and which nodes of the optimized model that gets quantized each of them became.

ORT's pre-processing fuses and decomposes nodes (a HardSwish becomes an unnamed HardSigmoid and Mul; a MatMul and
Add become one Gemm), so the quantizer sees other names than the user does, and unnamed nodes cannot be kept in
float one at a time (ORT matches ``nodes_to_exclude`` by name, and every unnamed node has the name ``""``). These
functions work on ONNX protos only; they import nothing heavy themselves.
"""

from __future__ import annotations

from typing import Any


def node_map(fp32, optimized) -> dict[str, Any]:
    """Map the FP32 model's nodes to the optimized model's, naming the optimized model's unnamed nodes after the
    FP32 node they implement (``<fp32 name>/<OpType>``). Mutates ``optimized``'s node names.

    A node of the optimized model belongs to the FP32 node of the same name, else to the one that produced the same
    output tensor, else (a tensor made inside a decomposition) to whoever its first consumer belongs to. An FP32
    node that vanished (fused into a consumer) maps to what its first surviving consumer became.

    Returns ``{"nodes": [{"name", "op_type", "optimized": [names]}] in FP32 order,
    "optimized": {name: {"op_type", "owner"}}}``.
    """
    fp32_nodes = list(fp32.graph.node)
    fp32_names = {n.name for n in fp32_nodes}
    made_by = {t: n.name for n in fp32_nodes for t in n.output if t}
    opt_nodes = list(optimized.graph.node)
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(opt_nodes):
        for t in n.input:
            consumers.setdefault(t, []).append(i)
    owner: dict[int, str | None] = {}
    for i in reversed(range(len(opt_nodes))):  # graph order is topological: consumers are decided first
        n = opt_nodes[i]
        found = n.name if n.name in fp32_names else next((made_by[t] for t in n.output if t in made_by), None)
        if found is None:
            found = next((owner[j] for t in n.output for j in consumers.get(t, []) if owner.get(j)), None)
        owner[i] = found
    # Unique names for the optimized model: the FP32 name where it is the same node, else after its owner.
    used: set[str] = set()
    for i, n in enumerate(opt_nodes):
        if n.name in fp32_names and n.name not in used:
            used.add(n.name)
            continue
        base = f"{owner[i] or n.op_type}/{n.op_type}"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        n.name = name
        used.add(name)
    became: dict[str, list[str]] = {}
    for i, n in enumerate(opt_nodes):
        if owner[i]:
            became.setdefault(owner[i], []).append(n.name)
    _follow_fused(fp32_nodes, became)
    return {"nodes": [{"name": n.name, "op_type": n.op_type, "optimized": became.get(n.name, [])}
                      for n in fp32_nodes],
            "optimized": {n.name: {"op_type": n.op_type, "owner": owner[i]} for i, n in enumerate(opt_nodes)}}


def _follow_fused(fp32_nodes, became: dict[str, list[str]]) -> None:
    """FP32 nodes with no node of their own (fused into a consumer) map to their first consumer that has one."""
    consumers: dict[str, list[str]] = {}
    for n in fp32_nodes:
        for t in n.input:
            consumers.setdefault(t, []).append(n.name)
    outputs = {n.name: list(n.output) for n in fp32_nodes}
    for n in reversed(fp32_nodes):
        if n.name in became or n.op_type == "Constant":
            continue
        for t in outputs[n.name]:
            hit = next((c for c in consumers.get(t, []) if became.get(c)), None)
            if hit:
                became[n.name] = list(became[hit])
                break
