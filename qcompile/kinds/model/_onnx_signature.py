"""Read a model's signature (input and output names, dtypes, shapes with named dynamic axes) from an ONNX file, and
its node names as ``model.fp32.onnx`` shows them."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ...cache.keys import racy, stat_stamp
from ...cache.memos import learn, recall
from ...errors import BadInput
from ...signature import Signature, TensorSpec

_MEMO_VERSION = 1

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


def _load(path: Path, key: str):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several types for a damaged file
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise BadInput(f"{path} is not a valid ONNX model: {msg}", key=key) from None


def _external_files(model, path: Path, key: str) -> tuple[Path, ...]:
    names = set()
    for t in [*model.graph.initializer, *(a.t for n in model.graph.node for a in n.attribute if a.HasField("t"))]:
        if t.data_location == 1:  # TensorProto.EXTERNAL
            names |= {e.value for e in t.external_data if e.key == "location"}
    files = []
    for name in sorted(names):
        p = (path.parent / name).resolve()
        if not p.is_file():
            raise BadInput(f"{path.name} keeps its weights in {name!r}, which is not beside it ({p})", key=key)
        files.append(p)
    return tuple(files)


def inspect_onnx(path: Path, task: str = "classification",
                 key: str = "model.path") -> tuple[Signature, tuple[Path, ...]]:
    """The signature of the ONNX file at ``path`` and the external data files it names (``model.onnx.data``...,
    resolved beside it); an unreadable file is bad input naming ``key``.

    External files hold the weights of models saved with external data (torch.onnx.export's default): the cache
    key must cover them, or a retrained model with the same graph file would be a stale hit.

    Planning reads this on every build: the answer is remembered by the file's stat stamp (as the cache's stat
    memo remembers digests), so a cached build neither imports onnx nor parses a 100 MB protobuf again.
    """
    path = Path(path).resolve()
    memo = _memo_file(path, task)
    stamp = stat_stamp(path)
    remembered = _recall(memo, path, stamp, task)
    if remembered is not None:
        return remembered
    sig, external = _inspect(path, task, key)
    _remember(memo, path, stamp, task, sig, external)
    return sig, external


def _inspect(path: Path, task: str, key: str) -> tuple[Signature, tuple[Path, ...]]:
    model = _load(path, key)
    inputs = tuple(_spec(i, key, path) for i in graph_inputs(model))
    outputs = tuple(_spec(o, key, path) for o in model.graph.output)
    if not inputs or not outputs:
        raise BadInput(f"{path} has no inputs or no outputs", key=key)
    return Signature(inputs=inputs, outputs=outputs, task=task), _external_files(model, path, key)


def _memo_file(path: Path, task: str) -> Path | None:
    from ...cache import default_cache_dir

    try:
        root = default_cache_dir() / "memo" / "onnx-signatures"
    except Exception:  # no usable cache location: inspect every time
        return None
    return root / (hashlib.sha256(f"{path}\0{task}".encode()).hexdigest() + ".json")


def _recall(memo: Path | None, path: Path, stamp, task: str):
    if memo is None or stamp is None:
        return None
    try:
        doc = json.loads(recall(memo) or "null")
        if doc["version"] != _MEMO_VERSION or doc["path"] != str(path) or doc["stamp"] != stamp:
            return None
        external = tuple(Path(p) for p in doc["external"])
        if not all(p.is_file() for p in external):
            return None
        return Signature.model_validate(doc["signature"]), external
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remember(memo: Path | None, path: Path, stamp, task: str, sig: Signature, external) -> None:
    if memo is None or stamp is None or racy(stamp):
        return
    # Written with the build's other memos once it ends well: a build rejected as bad input leaves none.
    learn(memo, json.dumps({"version": _MEMO_VERSION, "path": str(path), "stamp": stamp, "task": task,
                            "signature": sig.model_dump(mode="json"), "external": [str(p) for p in external]}))


def name_unnamed(model) -> int:
    """Give every unnamed or duplicate-named node of ``model`` a unique ``<OpType>_<n>`` name; returns how many."""
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    renamed = 0
    taken = {n.name for n in model.graph.node if n.name}
    for node in model.graph.node:
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        while True:
            counts[node.op_type] += 1
            name = f"{node.op_type}_{counts[node.op_type]}"
            if name not in taken:
                break
        node.name = name
        taken.add(name)
        seen.add(name)
        renamed += 1
    return renamed


def node_list(path: Path) -> list[tuple[str, str]]:
    """(name, op type) of each node of the ONNX file at ``path`` as ``model.fp32.onnx`` will name them."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    name_unnamed(model)
    return [(n.name, n.op_type) for n in model.graph.node]
