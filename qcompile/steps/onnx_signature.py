"""Read a model's signature (input and output names, dtypes, shapes with named dynamic axes) from an ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..signature import Signature, TensorSpec

_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 2: "uint8", 3: "int8", 9: "bool"}


def graph_inputs(model) -> list[Any]:
    """The graph inputs that are not initializers (older exporters list weights as inputs too)."""
    init = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init]


def _spec(value_info, key: str, path: Path) -> TensorSpec:
    t = value_info.type.tensor_type
    dtype = _DTYPES.get(t.elem_type)
    if dtype is None:
        raise BadInput(f"{path.name}: tensor {value_info.name!r} has an element type qcompile does not handle "
                       f"({t.elem_type})", key=key)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"d{i}") for i, d in enumerate(t.shape.dim)]
    if dims and isinstance(dims[0], str):
        dims[0] = "batch"
    return TensorSpec(name=value_info.name, dtype=dtype, shape=tuple(dims))


def read_signature(path: Path, task: str = "classification", key: str = "model.path") -> Signature:
    """The signature of the ONNX file at ``path``; an unreadable file is bad input naming ``key``."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several types for a damaged file
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise BadInput(f"{path} is not a valid ONNX model: {msg}", key=key) from None
    inputs = tuple(_spec(i, key, path) for i in graph_inputs(model))
    outputs = tuple(_spec(o, key, path) for o in model.graph.output)
    if not inputs or not outputs:
        raise BadInput(f"{path} has no inputs or no outputs", key=key)
    return Signature(inputs=inputs, outputs=outputs, task=task)
