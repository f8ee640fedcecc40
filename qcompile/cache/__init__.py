"""The build cache: an action cache (step key -> output digests) over a content-addressed blob store.

Layout under the cache root::

    blobs/ab/<sha256>        artifact content, read-only, named by digest
    actions/ab/<key>.json    a finished step: its outputs' digests and small result values
    failures/<key>.json      the last failure of a step key (never a cache hit)
    locks/<key>.lock         per-key locks, so concurrent builds run a step once
    memo/                    stat memo of user files
    tmp/                     scratch space for running steps and atomic writes
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from .keys import StatMemo, canonical_json
from .store import BlobStore, CorruptBlob


def default_cache_dir() -> Path:
    """``QCOMPILE_CACHE_DIR`` if set, else the platform's user cache dir (``~/.cache/qcompile`` on Linux)."""
    env = os.environ.get("QCOMPILE_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("qcompile", appauthor=False))


@dataclass(frozen=True)
class ActionRecord:
    """What a finished step left behind: output name -> digest, plus its small JSON result."""

    key: str
    kind: str
    outputs: dict[str, str]
    result: dict[str, Any]
    seconds: float
    created: float


class Cache:
    """Facade over the blob store, action records, failure records and locks."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.tmp = self.root / "tmp"
        self.blobs = BlobStore(self.root / "blobs", self.tmp)
        self.memo = StatMemo(self.root / "memo")

    def action_path(self, key: str) -> Path:
        """Where the record of ``key`` lives."""
        return self.root / "actions" / key[:2] / f"{key}.json"

    def lock(self, key: str) -> FileLock:
        """A cross-process lock for one step key (blocks while another build runs that step)."""
        d = self.root / "locks"
        d.mkdir(parents=True, exist_ok=True)
        return FileLock(str(d / f"{key}.lock"))

    def lookup(self, key: str, verify: bool = True) -> ActionRecord | None:
        """The record for ``key`` when it and all its blobs are intact; a damaged record is discarded."""
        p = self.action_path(key)
        try:
            raw = json.loads(p.read_text())
            rec = ActionRecord(**raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            p.unlink(missing_ok=True)
            return None
        if rec.key != key:
            p.unlink(missing_ok=True)
            return None
        for digest in rec.outputs.values():
            ok = self.blobs.verify(digest) if verify else self.blobs.has(digest)
            if not ok:
                p.unlink(missing_ok=True)
                return None
        return rec

    def touch(self, key: str) -> None:
        """Mark a record as just used (its mtime), so ``gc --older-than`` keeps what builds still use."""
        try:
            os.utime(self.action_path(key))
        except OSError:
            pass

    def record(self, rec: ActionRecord) -> None:
        """Write an action record atomically; its blobs must already be in the store."""
        p = self.action_path(rec.key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(canonical_json(rec.__dict__))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
        self.failure_path(rec.key).unlink(missing_ok=True)

    def failure_path(self, key: str) -> Path:
        """Where the last failure of ``key`` is recorded."""
        return self.root / "failures" / f"{key}.json"

    def record_failure(self, key: str, kind: str, error: str) -> None:
        """Remember why a step failed (for ``cache ls`` and reports); a failure is never a cache hit."""
        p = self.failure_path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "kind": kind, "error": error, "time": time.time()}))
        os.replace(tmp, p)

    def iter_actions(self):
        """Every readable action record in the cache."""
        d = self.root / "actions"
        if not d.is_dir():
            return
        for p in sorted(d.glob("*/*.json")):
            try:
                yield ActionRecord(**json.loads(p.read_text()))
            except (OSError, ValueError, TypeError):
                continue

    def remove_action(self, key: str) -> None:
        """Forget a record (its blobs stay until ``gc``)."""
        self.action_path(key).unlink(missing_ok=True)

    # ------------------------------------------------------------------ builds (lockfiles by build id)
    def register_build(self, build_id: str, lockfile: Path) -> None:
        """Store a build's lockfile as a blob and index it by build id (for ``checkout`` and ``gc``)."""
        digest = self.blobs.put(lockfile)
        p = self.root / "builds" / f"{build_id}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            entry = json.loads(p.read_text())
        except (OSError, ValueError):
            entry = {"lockfiles": []}
        paths = {str(Path(x)) for x in entry.get("lockfiles", [])} | {str(Path(lockfile).resolve())}
        entry = {"build_id": build_id, "lock": digest, "lockfiles": sorted(paths), "time": time.time()}
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry, indent=2))
        os.replace(tmp, p)

    def find_build(self, build_id: str) -> dict[str, Any] | None:
        """The build index entry for ``build_id`` (a unique prefix works too)."""
        d = self.root / "builds"
        matches = sorted(d.glob(f"{build_id}*.json")) if d.is_dir() and build_id else []
        if len(matches) != 1:
            return None
        try:
            return json.loads(matches[0].read_text())
        except (OSError, ValueError):
            return None

    def iter_builds(self):
        """(index path, entry) for every build registered in the cache."""
        d = self.root / "builds"
        for p in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                yield p, json.loads(p.read_text())
            except (OSError, ValueError):
                continue


__all__ = ["Cache", "ActionRecord", "CorruptBlob", "default_cache_dir"]
