"""The build cache: an action cache (step key -> output digests) over a content-addressed blob store.

Layout under the cache root::

    blobs/ab/<sha256>        artifact content, read-only, named by digest
    actions/ab/<key>.json    a finished step: its outputs' digests and small result values, with its own digest
    failures/<key>.json      the last failure of a step key with a bug (never a cache hit; bad input records none)
    builds/<build id>.json   a build's lockfile and report blobs, where its lockfiles are, its project root
    locks/<key>.lock         per-key locks, so concurrent builds run a step once (removed by the build that made
                             one when it lets go)
    leases/<host>-<pid>-*.json  the keys each running build uses, so gc leaves them alone (see ``lease``)
    memo/                    stat memo of user files, ONNX signatures (see ``memos``)
    verified/ab/<sha256>     stat stamp of a blob when it was last hashed (trusted while unchanged)
    tmp/                     scratch space for running steps and atomic writes

A build's lease spans it: when the lease closes on bad input (exit 2), everything the build created here is
removed again (see ``journal``), and memos are written only when it closes without error. A read-only cache
(``journal``) serves cached steps and writes nothing; a step it lacks is bad input naming the cache.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, is_bad_input
from .journal import Journal
from .keys import canonical_json, digest_json
from .lease import Lease
from .memos import Memo
from .store import BlobStore, CorruptBlob

if TYPE_CHECKING:
    from filelock import FileLock


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


_RECORD_FIELDS = {f.name for f in fields(ActionRecord)}


def record_body(rec: ActionRecord) -> dict[str, Any]:
    """The JSON a record is stored as: its fields plus ``digest``, the sha256 of the canonical JSON of the rest.

    The fields go through JSON once before hashing, so the digest is of exactly what a reader parses back
    (tuples become lists, numpy scalars strings). The digest catches damage, not forgery: whoever can write the
    cache can also recompute it.
    """
    body = json.loads(canonical_json(rec.__dict__))
    return {**body, "digest": digest_json(body)}


def parse_record(raw: Any, key: str | None = None) -> tuple[ActionRecord | None, str | None]:
    """(record, None) when ``raw`` is an intact record (of ``key``, when given), else (None, what is wrong)."""
    if not isinstance(raw, dict):
        return None, "is not a record"
    body = dict(raw)
    digest = body.pop("digest", None)
    if digest is None:
        return None, "has no digest (older format)"
    if set(body) != _RECORD_FIELDS:
        return None, "has unknown or missing fields"
    if digest != digest_json(body):
        return None, "does not match its digest"
    rec = ActionRecord(**body)
    if not isinstance(rec.outputs, dict) or not all(isinstance(d, str) for d in rec.outputs.values()):
        return None, "has malformed outputs"
    if not isinstance(rec.result, dict):
        return None, "has a malformed result"
    if key is not None and rec.key != key:
        return None, "is filed under another key"
    return rec, None


class Cache:
    """Facade over the blob store, action records, failure records and locks.

    ``read_only``: never write here, even where the file system would allow it (a cache is also found read-only
    by itself, see ``journal``).
    """

    def __init__(self, root: Path | None = None, read_only: bool = False):
        self.root = Path(root) if root else default_cache_dir()
        self.tmp = self.root / "tmp"
        self.journal = Journal(self.root, read_only=read_only)
        self.blobs = BlobStore(self.root / "blobs", self.tmp, journal=self.journal)
        self._lease: Lease | None = None
        self.memo = Memo(self.root / "memo", self.journal, busy=lambda: self._lease is not None and self._lease.open)

    @property
    def read_only(self) -> str | None:
        """Why this cache must not be written (read-only), or None when it may be."""
        return self.journal.read_only

    def missing(self, step: str, kind: str) -> BadInput:
        """The bad input for a step a read-only cache does not hold (it cannot be run and stored)."""
        return BadInput(f"the cache {self.root} is read-only ({self.read_only}) and step {step} ({kind}) is not in "
                        "it: build once with a writable cache (set QCOMPILE_CACHE_DIR to a writable folder)")

    def action_path(self, key: str) -> Path:
        """Where the record of ``key`` lives."""
        return self.root / "actions" / key[:2] / f"{key}.json"

    def lock(self, key: str) -> FileLock:
        """A cross-process lock for one step key (blocks while another build runs that step)."""
        from filelock import FileLock  # here: a fully cached build takes no lock

        d = self.root / "locks"
        self.journal.make_dirs(d)
        return FileLock(str(d / f"{key}.lock"))

    def read_action(self, path: Path) -> tuple[ActionRecord | None, str | None]:
        """The record stored at ``path`` checked against its digest and file name, without touching blobs:
        (record, None), (None, what is wrong), or (None, None) when there is no file."""
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError):
            return None, "is unreadable"
        return parse_record(raw, key=path.name.removesuffix(".json"))

    def lookup(self, key: str, verify: bool = True, outputs: Iterable[str] | None = None) -> ActionRecord | None:
        """The record for ``key`` when it and all its blobs are intact; a damaged record is discarded.

        ``outputs`` are the output names the caller's step declares: a record with other names (a step whose
        outputs were renamed without a version bump) is discarded too, so the step reruns instead of failing
        on a missing output later.
        """
        p = self.action_path(key)
        rec, problem = self.read_action(p)
        if rec is None:
            if problem:
                self._discard(p)
            return None
        if outputs is not None and set(rec.outputs) != set(outputs):
            self._discard(p)
            return None
        for digest in rec.outputs.values():
            ok = self.blobs.verify(digest) if verify else self.blobs.has(digest)
            if not ok:
                self._discard(p)
                return None
        return rec

    def _discard(self, record: Path) -> None:
        """Delete a record that cannot be used (a read-only cache keeps it: it is just not used)."""
        if not self.read_only:
            record.unlink(missing_ok=True)

    def touch(self, key: str) -> None:
        """Mark a record as just used (its mtime), so ``gc --older-than`` keeps what builds still use."""
        if self.read_only:
            return
        try:
            os.utime(self.action_path(key))
        except OSError:
            pass

    def record(self, rec: ActionRecord) -> None:
        """Write an action record atomically; its blobs must already be in the store."""
        self.journal.write(self.action_path(rec.key), canonical_json(record_body(rec)).encode(), fsync=True)
        self.failure_path(rec.key).unlink(missing_ok=True)

    def failure_path(self, key: str) -> Path:
        """Where the last failure of ``key`` is recorded."""
        return self.root / "failures" / f"{key}.json"

    def record_failure(self, key: str, kind: str, error: str) -> None:
        """Remember why a step failed with a bug (for ``cache ls --failed``); a failure is never a cache hit.

        Not for bad input, which leaves nothing in the cache. Best effort: a full disk must not hide the error
        being recorded.
        """
        if self.read_only:
            return
        body = json.dumps({"key": key, "kind": kind, "error": error, "time": time.time()})
        try:
            self.journal.write(self.failure_path(key), body.encode())
        except OSError:
            pass

    def iter_action_files(self) -> Iterator[tuple[Path, ActionRecord | None, str | None]]:
        """(path, record, problem) for every record file; see ``read_action``."""
        d = self.root / "actions"
        if not d.is_dir():
            return
        for p in sorted(d.glob("*/*.json")):
            rec, problem = self.read_action(p)
            if rec is not None or problem:
                yield p, rec, problem

    def iter_actions(self) -> Iterator[ActionRecord]:
        """Every intact action record in the cache (damaged ones are skipped; ``cache verify`` removes them)."""
        for _, rec, _ in self.iter_action_files():
            if rec is not None:
                yield rec

    def lease(self) -> Lease:
        """The lease of the build running on this cache: ``with cache.lease() as lease: lease.hold(key)``.

        Reentrant: while one is open, this returns the same lease, so a caller can hold it around
        ``scheduler.execute`` (which opens it too) and keep its keys held until the caller is done.
        """
        if self._lease is None or not self._lease.open:
            self.journal.clear()  # a new build: what it creates from now on is its own
            self._lease = Lease(self.root / "leases", self.tmp, self.journal, on_close=self._closed)
        return self._lease

    def _closed(self, exc: BaseException | None) -> None:
        """The build's lease closed: on bad input take back what it created; when it ended well, write its memos."""
        try:
            if exc is not None and is_bad_input(exc):
                with contextlib.suppress(OSError):  # the bad input is the error to report, not a failed clean-up
                    self.undo()
            elif exc is None and self.memo.requested:
                self.memo.write()
        finally:
            self.journal.clear()

    def undo(self) -> None:
        """Remove what this build created (records, then blobs nothing else refers to, stamps, folders while
        empty), as a build that exits 2 must. What another running build holds stays."""
        actions, blobs = self.root / "actions", self.root / "blobs"
        files = list(dict.fromkeys(self.journal.files))
        keys = [p.name.removesuffix(".json") for p in files if p.parent.parent == actions]
        created = {p.name for p in files if p.parent.parent == blobs}
        self._drop_records(keys)
        self._drop_blobs(created)  # only blobs it made: an output equal to an older blob leaves that one be
        for p in files:
            if p.parent.parent not in (actions, blobs):
                p.unlink(missing_ok=True)
        self.journal.remove_dirs()

    def remove_action(self, key: str) -> None:
        """Forget a record (its blobs stay until ``gc``)."""
        self.action_path(key).unlink(missing_ok=True)

    def forget(self, keys: list[str]) -> None:
        """Remove the records of ``keys`` and the blobs only they referenced.

        Keys another running build holds stay: a parallel sweep worker may already be using what this one wrote.
        """
        self._drop_blobs(self._drop_records(keys))

    def _drop_records(self, keys: list[str]) -> set[str]:
        """Remove the records of ``keys`` but those another running build holds or a kept build names; return the
        digests of their outputs."""
        if not keys:
            return set()
        from .lease import read_leases

        live, _ = read_leases(self.root / "leases")
        own = self._lease.path if self._lease is not None else None
        others = set().union(*(lease.keys for lease in live if lease.path != own)) | self._registered_keys()
        outputs: set[str] = set()
        for key in (k for k in keys if k not in others):
            rec = self.lookup(key, verify=False)
            if rec is not None:
                outputs |= set(rec.outputs.values())
            self.remove_action(key)
        return outputs

    def _drop_blobs(self, digests: set[str]) -> None:
        """Remove the blobs ``digests`` that no record and no registered build refers to."""
        if not digests:
            return
        referenced = {d for rec in self.iter_actions() for d in rec.outputs.values()}
        referenced |= set().union(*(build_blobs(entry) for _, entry in self.iter_builds()))
        for digest in digests - referenced:
            self.blobs.remove(digest)

    def _registered_keys(self) -> set[str]:
        """Keys that registered builds' lockfiles name: a finished build's artifacts must stay checkout-able."""
        keys: set[str] = set()
        for _, entry in self.iter_builds():
            try:
                lock = json.loads(self.blobs.path(entry["lock"]).read_text())
                keys |= {node["key"] for node in lock["nodes"].values()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
        return keys

    # ------------------------------------------------------------------ builds (lockfiles by build id)
    def register_build(self, build_id: str, lockfile: Path, root: Path | None = None) -> None:
        """Store a build's lockfile as a blob and index it by build id (for ``checkout`` and ``gc``); a read-only
        cache indexes nothing (``checkout`` finds the build only if a build with a writable cache stored it).

        ``root`` is the project folder the lockfile's paths are relative to, so ``checkout`` can point the lockfile
        it restores elsewhere back at it. A rebuild with the same id (``reproduce``) replaces the stored lockfile
        and keeps the reports until its own are registered.
        """
        if self.read_only:
            return
        digest = self.blobs.put(lockfile)
        entry = self.build_entry(build_id) or {}
        paths = {str(Path(x)) for x in entry.get("lockfiles", [])} | {str(Path(lockfile).resolve())}
        entry = {**entry, "build_id": build_id, "lock": digest, "lockfiles": sorted(paths), "time": time.time()}
        if root is not None:
            entry["root"] = str(root)
        self.write_build_entry(build_id, entry)

    def register_reports(self, build_id: str, files: dict[str, Path]) -> None:
        """Store a registered build's reports (name -> file) as blobs, for ``checkout`` to restore (nothing on a
        read-only cache)."""
        if self.read_only:
            return
        entry = self.build_entry(build_id)
        if entry is None:
            raise KeyError(f"build {build_id} is not registered")
        entry["reports"] = {name: self.blobs.put(path) for name, path in files.items()}
        self.write_build_entry(build_id, entry)

    def build_entry(self, build_id: str) -> dict[str, Any] | None:
        """The index entry of exactly ``build_id``, or None."""
        try:
            return json.loads((self.root / "builds" / f"{build_id}.json").read_text())
        except (OSError, ValueError):
            return None

    def write_build_entry(self, build_id: str, entry: dict[str, Any]) -> None:
        """Replace the index entry of ``build_id`` atomically."""
        p = self.root / "builds" / f"{build_id}.json"
        self.journal.write(p, json.dumps(entry, indent=2).encode())

    def match_builds(self, prefix: str) -> list[str]:
        """The registered build ids starting with ``prefix``."""
        d = self.root / "builds"
        return [p.stem for p in sorted(d.glob(f"{glob.escape(prefix)}*.json"))] if d.is_dir() and prefix else []

    def find_build(self, build_id: str) -> dict[str, Any] | None:
        """The build index entry for ``build_id`` (a unique prefix works too)."""
        matches = self.match_builds(build_id)
        return self.build_entry(matches[0]) if len(matches) == 1 else None

    def iter_builds(self):
        """(index path, entry) for every build registered in the cache."""
        d = self.root / "builds"
        for p in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                yield p, json.loads(p.read_text())
            except (OSError, ValueError):
                continue


def build_blobs(entry: dict[str, Any]) -> set[str]:
    """The blobs a build index entry holds: its lockfile and reports."""
    reports = entry.get("reports")
    return {entry.get("lock", ""), *(reports.values() if isinstance(reports, dict) else ())} - {""}


__all__ = ["Cache", "ActionRecord", "CorruptBlob", "build_blobs", "default_cache_dir"]
