"""``qcompile.lock.json``: the resolved recipe and, for every node, its key, inputs and output digests.

The build id is derived from it, so two builds with the same id produced the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..cache.keys import digest_json, env_fingerprint
from ..errors import BadInput
from ..graph import Plan, StepOutcome
from ..recipe.schema import SCHEMA_VERSION, Recipe

LOCK_VERSION = 2  # 2: variants; one evaluate/benchmark node per variant and a compare node
LOCK_NAME = "qcompile.lock.json"
# Libraries whose versions a lockfile records for the whole build (each step also records its own).
BUILD_LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "numpy")


def make_lock(recipe: Recipe, plan: Plan, outcomes: list[StepOutcome]) -> dict[str, Any]:
    """The lockfile content for a finished build."""
    nodes = {}
    for o in outcomes:
        node = plan.node(o.name)
        nodes[o.name] = {
            "kind": o.kind,
            "key": o.key,
            "params": node.params.model_dump(mode="json"),
            "inputs": {slot: {"from": f"{ref.node}.{ref.output}", "digest": o.inputs.get(slot)}
                       for slot, ref in node.inputs.items()},
            "outputs": o.outputs,
            "env": o.env,
            "publish": node.publish,
            "gate": node.gate,
        }
    recipe_json = recipe.model_dump(mode="json")
    return {
        "lock_version": LOCK_VERSION,
        "qcompile": _qcompile_version(),
        "schema_version": SCHEMA_VERSION,
        "build_id": build_id_of(recipe_json, nodes),
        "recipe": recipe_json,
        "env": env_fingerprint(BUILD_LIBRARIES, host=True),
        "variants": plan.variants,
        "nodes": nodes,
    }


def build_id_of(recipe_json: dict[str, Any], nodes: dict[str, Any]) -> str:
    """The build id: a digest of the resolved recipe and every node's key and outputs."""
    return digest_json({"recipe": recipe_json,
                        "nodes": {n: {"key": v["key"], "outputs": v["outputs"]} for n, v in nodes.items()}})[:16]


def _qcompile_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("qcompile")
    except metadata.PackageNotFoundError:
        return None


def plan_from_lock(lock: dict[str, Any]) -> Plan:
    """The exact step graph a lockfile recorded, independent of how this qcompile would compile the recipe."""
    from ..graph import Node, Ref
    from ..steps.base import get_step

    plan = Plan()
    name = "?"
    try:
        for name, n in lock["nodes"].items():
            step = get_step(n["kind"])
            inputs = {slot: Ref(*i["from"].rsplit(".", 1)) for slot, i in n["inputs"].items()}
            plan.add(Node(name, n["kind"], step.Params.model_validate(n["params"]), inputs,
                          publish=n.get("publish", {}), gate=n.get("gate", {})))
        plan.variants = lock["variants"]
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise BadInput(f"lockfile node {name!r} cannot be rebuilt by this qcompile: {str(e).splitlines()[0]}") from None
    return plan


def read_lock(path: Path) -> dict[str, Any]:
    """A lockfile's content; a corrupt file or unknown version is bad input."""
    try:
        lock = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(f"lockfile not found: {path}") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"{path} is not a readable lockfile ({type(e).__name__})") from None
    if not isinstance(lock, dict) or lock.get("lock_version") != LOCK_VERSION:
        got = lock.get("lock_version") if isinstance(lock, dict) else None
        raise BadInput(f"{path}: lockfile version {got!r} is not supported (this qcompile reads {LOCK_VERSION})")
    for field, typ in (("recipe", dict), ("nodes", dict), ("build_id", str), ("variants", dict)):
        if not isinstance(lock.get(field), typ):
            raise BadInput(f"{path}: lockfile has no valid {field!r}")
    try:
        same = build_id_of(lock["recipe"], lock["nodes"]) == lock["build_id"]
    except (KeyError, TypeError, AttributeError):
        same = False
    if not same:
        raise BadInput(f"{path}: the lockfile's content does not match its build_id {lock['build_id']}: it was "
                       "edited or damaged after the build")
    if lock.get("schema_version") != SCHEMA_VERSION:
        raise BadInput(f"{path}: recipe schema version {lock.get('schema_version')!r} is unknown to this qcompile "
                       f"(it reads {SCHEMA_VERSION})")
    return lock
