"""A model converted to ONNX Runtime's mobile format (``.ort``), with the operator configs of a reduced ORT
build and ORT's mobile usability check (NNAPI and CoreML node coverage).

``--target_platform arm`` keeps int8 QDQ as it is (``amd64`` would rewrite it to x86's uint8 QLinear ops). Fixed
input shapes (``make_dynamic_shape_fixed``) let NNAPI take the whole graph: with a dynamic batch it covers few
nodes. The ``.ort`` loads in an ordinary ``InferenceSession``, which is how evaluate and benchmark run it here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..kinds.targets.ort_mobile import OrtFormatParams
from .base import Step, StepContext, register
from .quiet import quiet

# The converter's name for each target architecture.
PLATFORMS = {"arm64": "arm"}


def unsupported_ops(model) -> list[str]:
    """``domain:op`` of every node type ONNX Runtime has no CPU kernel for (and that is no ONNX function it
    inlines): what an ORT Mobile build cannot run."""
    import onnx
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    kernels = {(k.domain or "", k.op_name) for k in C.get_all_opkernel_def() if k.provider == "CPUExecutionProvider"}
    local = {(f.domain, f.name) for f in model.functions}
    bad = set()
    for node in model.graph.node:
        key = ("" if node.domain == "ai.onnx" else node.domain, node.op_type)
        if key in kernels or key in local:
            continue
        try:  # an ONNX op defined as a function of other ops is expanded by ORT
            if onnx.defs.get_schema(node.op_type, domain=key[0]).has_function:
                continue
        except onnx.defs.SchemaError:
            pass
        bad.add(f"{key[0] or 'ai.onnx'}:{node.op_type}")
    return sorted(bad)


def _coverage(info) -> dict[str, Any]:
    return {"nodes": info.num_nodes, "supported": info.num_supported_nodes, "partitions": info.num_partitions,
            "unsupported_ops": sorted(info.unsupported_ops), "suitability": info.suitability().name}


def usability(path: Path, workdir: Path) -> dict[str, Any]:
    """ORT's mobile usability check: per EP, nodes covered, partitions and its verdict (YES/MAYBE/NO), on the
    model after ORT's basic optimisations, as the checker (and the ORT-format conversion) sees it."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    basic = workdir / "usability" / "model.basic.onnx"
    basic.parent.mkdir(exist_ok=True)
    optimize_model(path, basic)
    model = ModelProtoWithShapeInfo(basic).model_with_shape_info
    return {"NNAPI": _coverage(uc.check_nnapi_partitions(model, require_fixed_input_sizes=True)),
            "CoreML": _coverage(uc.check_coreml_partitions(model, True, "coreml_supported_mlprogram_ops.md")),
            "NNAPI if shapes were fixed": _coverage(uc.check_nnapi_partitions(model, require_fixed_input_sizes=False)),
            "XNNPACK": "not checked (ORT's usability checker has no XNNPACK table)"}


def coverage_line(u: dict[str, Any]) -> str:
    """One line for the report: "NNAPI 20/20 nodes in 1 partition (YES); CoreML ..."."""
    parts = []
    for ep, c in u.items():
        if isinstance(c, dict):
            missing = f", unsupported: {', '.join(c['unsupported_ops'])}" if c["unsupported_ops"] else ""
            parts.append(f"{ep} {c['supported']}/{c['nodes']} nodes in {c['partitions']} partition(s) "
                         f"({c['suitability']}{missing})")
    return "mobile usability: " + "; ".join(parts)


def _config_without_paths(src: Path, dest: Path) -> None:
    """Copy an operator config, naming the model it was made from by file name only (not the build folder)."""
    lines = [f"# - {Path(ln[4:]).name}" if ln.startswith("# - /") else ln for ln in src.read_text().splitlines()]
    dest.write_text("\n".join(lines) + "\n")


@register
class OrtFormatStep(Step):
    """ONNX -> ``.ort`` with required_operators(.and_types).config and the usability check."""

    kind = "convert.ort_format"
    version = 3  # 2: operator configs without the build folder's paths; 3: params hold the target section
    Params = OrtFormatParams
    inputs = ("model",)
    outputs = {"model": "model.ort", "operators": "required_operators.config",
               "operators_types": "required_operators_and_types.config", "usability": "usability.json"}
    libraries = ("onnx", "onnxruntime")
    # ORT's flatbuffer writer orders some tables differently from run to run (same size, same outputs), so a
    # rebuilt .ort has other bytes: reproduce reports it as expected rather than as a difference.
    deterministic = False
    # The platform is the app's (Android or iOS), not the converter's; the fixed batch is keyed as fixed_dims.
    unkeyed = ("target.platform", "target.fixed_batch")

    def run(self, ctx: StepContext, p: OrtFormatParams) -> dict[str, Any]:
        import onnx
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
        from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed

        model = onnx.load(str(ctx.inputs["model"]))
        bad = unsupported_ops(model)
        if bad:
            raise BadInput(f"ONNX Runtime Mobile cannot run op(s) {', '.join(bad)} (no ORT kernel); replace them "
                           "in the model or choose another target", key="target")
        if p.fixed_dims:
            params = {d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim if d.dim_param}
            unknown = sorted(set(p.fixed_dims) - params)
            if unknown:
                raise BadInput(f"no dynamic dimension named {unknown} in the model's inputs (it has: "
                               f"{sorted(params) or 'none'})", key="target.fixed_dims")
            for name, value in sorted(p.fixed_dims.items()):
                make_dim_param_fixed(model.graph, name, value)
            fix_output_shapes(model)
        src = ctx.workdir / "src" / "model.onnx"  # the name the converter's outputs take theirs from
        src.parent.mkdir()
        onnx.save(model, str(src))
        style = getattr(OptimizationStyle, p.target.optimization_style)
        for types, out in ((False, "plain"), (True, "typed")):
            with quiet("onnxruntime", loggers=("ort_format_model",)):
                convert_onnx_models_to_ort(src, output_dir=ctx.workdir / out, optimization_styles=[style],
                                           target_platform=PLATFORMS[p.target.arch], enable_type_reduction=types)
        shutil.copyfile(next((ctx.workdir / "plain").glob("*.ort")), ctx.out("model"))
        _config_without_paths(next((ctx.workdir / "plain").glob("*.config")), ctx.out("operators"))
        _config_without_paths(next((ctx.workdir / "typed").glob("*.config")), ctx.out("operators_types"))
        u = usability(src, ctx.workdir)
        ctx.out("usability").write_text(json.dumps(u, indent=1, sort_keys=True))
        ctx.note(coverage_line(u))
        ops = [ln for ln in ctx.out("operators").read_text().splitlines() if ln and not ln.startswith("#")]
        return {"usability": u, "operator_lines": len(ops), "ort_bytes": ctx.out("model").stat().st_size,
                "fixed_dims": p.fixed_dims}
