"""Rebuild a build from its lockfile alone and compare every output digest; materialise a build by id."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..cache import Cache
from ..cache.keys import env_fingerprint
from ..errors import BadInput
from ..recipe.load import validate
from ..run.progress import Reporter
from ..run.scheduler import user_files
from ..steps.base import get_step
from .build import build
from .lockfile import BUILD_LIBRARIES, LOCK_NAME, localize, plan_from_lock, read_lock, reproducible
from .portable import Locator


@dataclass
class NodeDiff:
    """How one node's rebuilt outputs compare with the lockfile."""

    name: str
    kind: str
    status: str  # same | differs | expected (a measurement, or fed by one) | missing
    key_same: bool
    outputs: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    env_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # The user files this node reads whose content changed since the build: (path here, digest then, digest now).
    files_changed: list[tuple[str, str, str | None]] = field(default_factory=list)
    inputs_changed: list[str] = field(default_factory=list)  # "slot (producer.output)"


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


def _changed_files(files: dict[str, str], loc: Locator, cache: Cache) -> dict[str, tuple[str, str | None]]:
    """The recorded user files whose content differs here: path here -> (digest then, digest now or None)."""
    changed = {}
    for recorded, then in files.items():
        here = loc.path(recorded)
        try:
            now: str | None = "sha256:" + cache.memo.digest(Path(here))
        except OSError:
            now = None
        if now != then:
            changed[here] = (then, now)
    return changed


def reproduce(lockfile: str | Path, out_dir: str | Path | None = None, cache: Cache | None = None,
              reporter: Reporter | None = None, roots: Sequence[str] = ()) -> ReproduceResult:
    """Rebuild the graph recorded in ``lockfile`` (cache hits restore, misses re-run) and compare digests.

    The lockfile's paths are found from the project root it names relative to itself, or from ``roots``
    (``--root``, see ``portable.Locator``); a file that is not here is bad input before anything runs. An unchanged
    build keeps its build id. Nodes outside the build id (measurements, what they feed) are expected to differ and
    are reported as such, not as a failure.
    """
    path = Path(lockfile)
    lock = read_lock(path)
    local, loc = localize(lock, path, roots)
    recipe = validate(local["recipe"])
    plan = plan_from_lock(local)
    cache = cache or Cache()
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix=f"qcompile-reproduce-{lock['build_id']}-"))
    result = build(recipe, out, cache=cache, reporter=reporter, check_gates=False, plan=plan, root=loc.root)
    changed = _changed_files(lock["files"], loc, cache)
    same = reproducible(lock["nodes"])
    by_name = {o.name: o for o in result.outcomes}
    diffs = []
    for name, old in local["nodes"].items():
        new = by_name.get(name)
        if new is None:
            diffs.append(NodeDiff(name, old["kind"], "missing", False))
            continue
        outputs = {k: (old["outputs"].get(k), new.outputs.get(k)) for k in set(old["outputs"]) | set(new.outputs)}
        status = "same" if all(a == b for a, b in outputs.values()) else "differs" if name in same else "expected"
        read = [p for paths in user_files(old["params"], get_step(old["kind"])).values() for p in paths]
        diffs.append(NodeDiff(
            name, old["kind"], status, old["key"] == new.key, outputs, _env_diff(old.get("env", {}), new.env),
            files_changed=[(p, *changed[p]) for p in read if p in changed],
            inputs_changed=[f"{slot} ({i['from']})" for slot, i in old["inputs"].items()
                            if i.get("digest") != new.inputs.get(slot)]))
    return ReproduceResult(lock["build_id"], result.build_id, out, diffs,
                           _env_diff(lock.get("env", {}), env_fingerprint(BUILD_LIBRARIES, host=True)))


def explain(diff: NodeDiff) -> str:
    """Why a node's outputs differ, as far as the lockfile can tell."""
    if diff.files_changed:
        return "; ".join(f"the user file {p} changed since the build ({then[:19]}... -> "
                         f"{now[:19] + '...' if now else 'unreadable'})" for p, then, now in diff.files_changed)
    if diff.env_changes:
        changes = ", ".join(f"{k} {a} -> {b}" for k, a, b in ((k, *v) for k, v in diff.env_changes.items()))
        return f"its environment changed ({changes})"
    if diff.key_same:
        return "same key, other bytes: the step is not deterministic on this machine"
    if diff.inputs_changed:
        return f"its inputs {', '.join(diff.inputs_changed)} differ"
    return "same inputs and user files, another key: its params or its step's version changed"


def checkout(build_id: str, dest: str | Path, cache: Cache | None = None) -> list[Path]:
    """Copy a build's published artifacts, lockfile and reports from the cache into ``dest`` (which must be empty).

    The lockfile's project root is rewritten relative to ``dest``, so ``qcompile reproduce`` of the restored
    lockfile finds the project's files where the build found them.
    """
    cache = cache or Cache()
    matches = cache.match_builds(build_id)
    if len(matches) > 1:
        shown = ", ".join(matches[:4]) + (f" and {len(matches) - 4} more" if len(matches) > 4 else "")
        raise BadInput(f"build id {build_id!r} matches {len(matches)} builds ({shown}); give more of the id")
    entry = cache.find_build(build_id)
    if entry is None:
        raise BadInput(f"no build {build_id!r} in the cache at {cache.root} (see `qcompile cache ls --builds`)")
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BadInput(f"{dest} is not empty; checkout never overwrites files")
    if not cache.blobs.verify(entry["lock"]):
        raise BadInput(f"the lockfile of build {build_id} is missing or damaged in the cache")
    lock = json.loads(cache.blobs.path(entry["lock"]).read_text())
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
    if entry.get("root") and "root" in lock:
        dest.mkdir(parents=True, exist_ok=True)
        lock["root"] = Path(os.path.relpath(entry["root"], dest.resolve())).as_posix()
        (dest / LOCK_NAME).write_text(json.dumps(lock, indent=2) + "\n")
    else:
        cache.blobs.copy_out(entry["lock"], dest / LOCK_NAME)
    written.append(dest / LOCK_NAME)
    # report.json last, as a build writes it.
    for name, digest in sorted(entry.get("reports", {}).items(), key=lambda kv: kv[0] == "report.json"):
        if not cache.blobs.verify(digest):
            missing.append(name)
            continue
        cache.blobs.copy_out(digest, dest / name)
        written.append(dest / name)
    if missing:
        raise BadInput(f"{', '.join(missing)} of build {build_id} are no longer in the cache; "
                       f"rebuild them with `qcompile reproduce {dest / LOCK_NAME}`")
    return written
