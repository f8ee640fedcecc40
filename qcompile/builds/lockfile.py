"""``qcompile.lock.json``: the resolved recipe and, for every node, its key, params, inputs and output digests.

Two digests guard it. The build id covers what a rebuild must give again (every node's kind, params, wiring and
gates; keys and outputs of the nodes that are reproducible), so two builds with the same id produced the same
deterministic bytes and a rebuild of an unchanged build keeps its id; measurements of the host (latency) and what
they feed stay out of it. The content digest covers the whole file, measurements included, so an edited lockfile
is refused before anything runs. Paths are portable (``portable``): a project moved elsewhere keeps both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..cache.keys import digest_json, env_fingerprint
from ..errors import BadInput
from ..graph import Plan, StepOutcome
from ..recipe.schema import SCHEMA_VERSION, Recipe
from ..steps.base import get_step
from .portable import Locator, Recorder, recorded_paths

if TYPE_CHECKING:
    from ..cache import Cache

# 2: variants; one evaluate/benchmark node per variant and a compare node. 3: portable paths (root://, pkg://) and
# user-file digests; the build id leaves host measurements out and covers every node's params; a content digest.
LOCK_VERSION = 3
LOCK_NAME = "qcompile.lock.json"
# Libraries whose versions a lockfile records for the whole build (each step also records its own).
BUILD_LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "numpy")
# What the content digest leaves out: itself, and where the project's root is (checkout rewrites it for the folder
# it restores into; a root pointing elsewhere finds other files, whose digests then differ).
_UNDIGESTED = ("digest", "root")


def make_lock(recipe: Recipe, plan: Plan, outcomes: list[StepOutcome], cache: Cache, lock_dir: Path,
              root: Path) -> dict[str, Any]:
    """The lockfile content for a finished build written to ``lock_dir``, its paths portable from ``root``."""
    from ..run.scheduler import key_material, user_files

    rec = Recorder(root)
    files: dict[str, str] = {}
    nodes = {}
    for o in outcomes:
        node, step = plan.node(o.name), get_step(o.kind)
        params = node.params.model_dump(mode="json")
        for paths in user_files(params, step).values():
            for p in paths:
                files.setdefault(rec.path(str(p)), "sha256:" + cache.memo.digest(Path(p)))
        material = key_material(node, step, o.inputs, cache)
        nodes[o.name] = {
            "kind": o.kind,
            "key": o.key,
            # The key without input digests and environment: what the node was asked to do, wherever it ran.
            "spec": digest_json({k: v for k, v in material.items() if k not in ("inputs", "env")}),
            "params": rec.portable(params),
            "inputs": {slot: {"from": f"{ref.node}.{ref.output}", "digest": o.inputs.get(slot)}
                       for slot, ref in node.inputs.items()},
            "outputs": o.outputs,
            "env": o.env,
            "publish": node.publish,
            "gate": node.gate,
        }
    lock = {
        "lock_version": LOCK_VERSION,
        "qcompile": _qcompile_version(),
        "schema_version": SCHEMA_VERSION,
        "build_id": "",
        "digest": "",
        "root": rec.root_from(lock_dir),
        "recipe": rec.portable(recipe.model_dump(mode="json")),
        "env": env_fingerprint(BUILD_LIBRARIES, host=True),
        "variants": plan.variants,
        "files": files,
        "nodes": nodes,
    }
    lock["build_id"] = build_id_of(lock)
    lock["digest"] = content_digest(lock)
    return lock


def reproducible(nodes: dict[str, Any]) -> set[str]:
    """The nodes a rebuild must give again byte for byte: deterministic steps that measure no host, fed only by
    such nodes (a step fed by a timing or an engine build inherits its variation). ``nodes`` in build order."""
    same: set[str] = set()
    for name, n in nodes.items():
        step = get_step(n["kind"])
        producers = {i["from"].rsplit(".", 1)[0] for i in n["inputs"].values()}
        if step.deterministic and not step.host_dependent and producers <= same:
            same.add(name)
    return same


def build_id_of(lock: dict[str, Any]) -> str:
    """The build id: every node's kind, spec, wiring, gates and published names, plus the key and output digests
    of the reproducible nodes (``reproducible``); no path, no host measurement."""
    nodes, same = lock["nodes"], reproducible(lock["nodes"])
    return digest_json({"variants": lock["variants"], "nodes": {
        name: {"kind": n["kind"], "spec": n["spec"], "inputs": {slot: i["from"] for slot, i in n["inputs"].items()},
               "publish": n["publish"], "gate": n["gate"],
               **({"key": n["key"], "outputs": n["outputs"]} if name in same else {})}
        for name, n in nodes.items()}})[:16]


def content_digest(lock: dict[str, Any]) -> str:
    """sha256 of the whole lockfile but its digest and root: measurements, params and environment included."""
    return digest_json({k: v for k, v in lock.items() if k not in _UNDIGESTED})


def _qcompile_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("qcompile")
    except metadata.PackageNotFoundError:
        return None


def plan_from_lock(lock: dict[str, Any]) -> Plan:
    """The exact step graph a lockfile recorded (its paths as ``localize`` found them here), independent of how
    this qcompile would compile the recipe."""
    from ..graph import Node, Ref

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


def localize(lock: dict[str, Any], path: Path, roots: Sequence[str] = ()) -> tuple[dict[str, Any], Locator]:
    """``lock`` with its recorded paths as they are on this machine, and the locator that found them.

    Bad input, before anything runs, naming the first file that is not here: with the project root the lockfile
    names (or ``roots``, ``qcompile reproduce --root``) when it is a project file, else the file itself.
    """
    loc = Locator(path, lock["root"], roots)
    loc.check(lock["files"], list(dict.fromkeys(recorded_paths([lock["recipe"], lock["nodes"]]))))
    return {**lock, "recipe": loc.local(lock["recipe"]), "nodes": loc.local(lock["nodes"])}, loc


def read_lock(path: Path) -> dict[str, Any]:
    """A lockfile's content, verified; a corrupt, edited or unknown-version file is bad input."""
    try:
        lock = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(f"lockfile not found: {path}") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"{path} is not a readable lockfile ({type(e).__name__})") from None
    got = lock.get("lock_version") if isinstance(lock, dict) else None
    if isinstance(got, int) and 0 < got < LOCK_VERSION:
        raise BadInput(f"{path}: lockfile version {got} is not supported: an older qcompile wrote it (absolute paths, "
                       f"a build id over the timings); this qcompile reads version {LOCK_VERSION}, build the recipe "
                       "again to get one")
    if got != LOCK_VERSION:
        raise BadInput(f"{path}: lockfile version {got!r} is not supported (this qcompile reads {LOCK_VERSION})")
    for field, typ in (("recipe", dict), ("nodes", dict), ("build_id", str), ("variants", dict), ("files", dict),
                       ("root", str), ("digest", str)):
        if not isinstance(lock.get(field), typ):
            raise BadInput(f"{path}: lockfile has no valid {field!r}")
    if lock.get("schema_version") != SCHEMA_VERSION:
        raise BadInput(f"{path}: recipe schema version {lock.get('schema_version')!r} is unknown to this qcompile "
                       f"(it reads {SCHEMA_VERSION})")
    for name, node in lock["nodes"].items():
        kind = node.get("kind") if isinstance(node, dict) else None
        if isinstance(kind, str):  # anything else is damage, which the digest check names
            try:
                get_step(kind)
            except KeyError:
                raise BadInput(f"{path}: lockfile node {name!r} runs the step kind {kind!r}, which this qcompile "
                               "does not have (a newer qcompile wrote it?)") from None
    try:
        same = content_digest(lock) == lock["digest"] and build_id_of(lock) == lock["build_id"]
    except (KeyError, TypeError, AttributeError, ValueError):
        same = False
    if not same:
        raise BadInput(f"{path}: the lockfile's content does not match its build_id {lock['build_id']} and digest: "
                       "it was edited or damaged after the build")
    return lock
