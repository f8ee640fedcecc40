"""Rebuild a build from its lockfile alone and compare every output digest; materialise a build by id."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import Cache
from ..cache.keys import env_fingerprint
from ..errors import BadInput
from ..recipe.load import validate
from ..run.progress import Reporter
from ..steps.base import get_step
from .build import build
from .lockfile import BUILD_LIBRARIES, LOCK_NAME, plan_from_lock, read_lock


@dataclass
class NodeDiff:
    """How one node's rebuilt outputs compare with the lockfile."""

    name: str
    kind: str
    status: str  # same | differs | expected (a measurement) | missing
    key_same: bool
    outputs: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    env_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


@dataclass
class ReproduceResult:
    """The outcome of ``reproduce``: per-node comparison and environment changes."""

    build_id: str
    new_build_id: str
    out_dir: Path
    nodes: list[NodeDiff]
    env_changes: dict[str, tuple[Any, Any]]

    @property
    def first_difference(self) -> NodeDiff | None:
        """The first node (in build order) whose deterministic outputs differ."""
        return next((n for n in self.nodes if n.status == "differs"), None)

    @property
    def identical(self) -> bool:
        """True when every deterministic output matches the lockfile."""
        return self.first_difference is None


def _env_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def reproduce(lockfile: str | Path, out_dir: str | Path | None = None, cache: Cache | None = None,
              reporter: Reporter | None = None) -> ReproduceResult:
    """Rebuild the graph recorded in ``lockfile`` (cache hits restore, misses re-run) and compare digests.

    Measurement steps (latency) are expected to differ and are reported as such, not as a failure.
    """
    lock = read_lock(Path(lockfile))
    recipe = validate(lock["recipe"])
    plan = plan_from_lock(lock)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix=f"qcompile-reproduce-{lock['build_id']}-"))
    result = build(recipe, out, cache=cache, reporter=reporter, check_gates=False, plan=plan)
    by_name = {o.name: o for o in result.outcomes}
    diffs = []
    for name, old in lock["nodes"].items():
        new = by_name.get(name)
        step = get_step(old["kind"])
        if new is None:
            diffs.append(NodeDiff(name, old["kind"], "missing", False))
            continue
        outputs = {k: (old["outputs"].get(k), new.outputs.get(k)) for k in set(old["outputs"]) | set(new.outputs)}
        same = all(a == b for a, b in outputs.values())
        status = "same" if same else ("expected" if not step.deterministic else "differs")
        diffs.append(NodeDiff(name, old["kind"], status, old["key"] == new.key, outputs,
                              _env_diff(old.get("env", {}), new.env)))
    return ReproduceResult(lock["build_id"], result.build_id, out, diffs,
                           _env_diff(lock.get("env", {}), env_fingerprint(BUILD_LIBRARIES, host=True)))


def explain(diff: NodeDiff) -> str:
    """Why a node's outputs differ, as far as the lockfile can tell."""
    if diff.env_changes:
        changes = ", ".join(f"{k} {a} -> {b}" for k, a, b in ((k, *v) for k, v in diff.env_changes.items()))
        return f"its environment changed ({changes})"
    if diff.key_same:
        return "same key, other bytes: the step is not deterministic on this machine"
    return "its inputs changed upstream"


def checkout(build_id: str, dest: str | Path, cache: Cache | None = None) -> list[Path]:
    """Copy a build's published artifacts and lockfile from the cache into ``dest`` (which must be empty)."""
    import json

    cache = cache or Cache()
    entry = cache.find_build(build_id)
    if entry is None:
        raise BadInput(f"no build {build_id!r} in the cache at {cache.root} (see `qcompile cache ls --builds`)")
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BadInput(f"{dest} is not empty; checkout never overwrites files")
    lock_path = cache.blobs.path(entry["lock"])
    if not cache.blobs.verify(entry["lock"]):
        raise BadInput(f"the lockfile of build {build_id} is missing or damaged in the cache")
    lock = json.loads(lock_path.read_text())
    written = []
    missing = []
    for name, node in lock["nodes"].items():
        for output, rel in node.get("publish", {}).items():
            digest = node["outputs"][output]
            if not cache.blobs.verify(digest):
                missing.append(f"{name}.{output}")
                continue
            cache.blobs.copy_out(digest, dest / "artifacts" / rel)
            written.append(dest / "artifacts" / rel)
    cache.blobs.copy_out(entry["lock"], dest / LOCK_NAME)
    written.append(dest / LOCK_NAME)
    if missing:
        raise BadInput(f"artifacts {missing} of build {build_id} are no longer in the cache; "
                       f"rebuild them with `qcompile reproduce {dest / LOCK_NAME}`")
    return written
