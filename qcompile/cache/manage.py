"""Cache housekeeping: list, summarise, verify and garbage-collect.

gc never deletes what a kept lockfile needs: a build stays kept while its ``qcompile.lock.json`` still exists
on disk (delete the build folder to release it), unless ``include_kept`` is asked for. Nor does it delete what
a running build holds through its lease (see ``lease``), whatever is asked; the races that leaves are listed
there.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from . import Cache, build_blobs
from .lease import held_keys, read_leases

STALE_TMP_SECONDS = 3600  # younger scratch files may belong to a build that is running now


@dataclass
class GcResult:
    """What a ``gc`` run removed (or would remove, with ``dry_run``)."""

    removed_records: int = 0
    removed_blobs: int = 0
    freed_bytes: int = 0
    kept_builds: int = 0
    dropped_builds: int = 0
    removed_tmp: int = 0
    running_builds: int = 0  # live leases seen when gc started
    removed_leases: int = 0  # leases of builds that died without removing them
    target_bytes: int | None = None  # the max_bytes asked for, if any
    remaining_bytes: int = 0  # what the blobs left in the store (or that would be left, dry_run) weigh
    details: list[str] = field(default_factory=list)

    @property
    def missed_target(self) -> bool:
        """True when a size target was asked for and the store is still above it."""
        return self.target_bytes is not None and self.remaining_bytes > self.target_bytes


def blob_size(cache: Cache, digest: str) -> int:
    """Size of a blob in bytes, 0 when it is gone."""
    try:
        return cache.blobs.path(digest).stat().st_size
    except OSError:
        return 0


def list_records(cache: Cache) -> list[dict[str, Any]]:
    """Every action record with its size and last use, newest first."""
    rows = []
    for rec in cache.iter_actions():
        p = cache.action_path(rec.key)
        rows.append({"key": rec.key, "kind": rec.kind, "created": rec.created, "seconds": rec.seconds,
                     "last_used": p.stat().st_mtime if p.exists() else rec.created,
                     "bytes": sum(blob_size(cache, d) for d in rec.outputs.values())})
    return sorted(rows, key=lambda r: r["last_used"], reverse=True)


def list_failures(cache: Cache) -> list[dict[str, Any]]:
    """The recorded failures of steps, with their errors."""
    d = cache.root / "failures"
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


def info(cache: Cache) -> dict[str, Any]:
    """Counts and sizes of what the cache holds."""
    digests = list(cache.blobs.iter_digests())
    return {"root": str(cache.root), "records": sum(1 for _ in cache.iter_actions()), "blobs": len(digests),
            "bytes": sum(blob_size(cache, d) for d in digests), "builds": sum(1 for _ in cache.iter_builds()),
            "failures": len(list_failures(cache))}


def _writable(cache: Cache, verb: str) -> None:
    """Bad input for ``cache <verb>`` on a read-only cache: it would remove entries (root is not stopped by the
    permission bits, so qcompile honours them itself)."""
    if cache.read_only:
        raise BadInput(f"cache {verb}: the cache {cache.root} is read-only ({cache.read_only}); run it where the "
                       "cache is writable")


def verify(cache: Cache) -> tuple[int, list[str]]:
    """Re-hash every blob, check every record's digest and every build index entry; remove what is damaged
    (and the records that point to removed blobs). Returns (entries checked, one line per removal)."""
    _writable(cache, "verify")
    problems = []
    checked = 0
    for digest in list(cache.blobs.iter_digests()):
        checked += 1
        if not cache.blobs.verify(digest, full=True):
            problems.append(f"blob {digest[:16]} was damaged and is removed")
    for path, rec, problem in list(cache.iter_action_files()):
        checked += 1
        if rec is None:
            path.unlink(missing_ok=True)
            problems.append(f"record {path.stem[:12]} {problem} and is removed; the next build reruns it")
        elif any(not cache.blobs.has(d) for d in rec.outputs.values()):
            cache.remove_action(rec.key)
            problems.append(f"record {rec.key[:12]} ({rec.kind}) lost an output and is removed; "
                            "the next build reruns it")
    builds = cache.root / "builds"
    for path in sorted(builds.glob("*.json")) if builds.is_dir() else []:
        checked += 1
        try:
            entry = json.loads(path.read_text())
            lock = entry["lock"]
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            problems.append(f"build index entry {path.stem} is unreadable and is removed")
            continue
        # Damaged blobs were removed above, so a damaged lockfile blob is a missing one by now.
        if not isinstance(lock, str) or not cache.blobs.has(lock):
            path.unlink(missing_ok=True)
            problems.append(f"build index entry {path.stem} lost its lockfile blob and is removed "
                            "(`checkout` of that build id no longer works)")
            continue
        reports = entry.get("reports")
        if isinstance(reports, dict) and not all(isinstance(d, str) and cache.blobs.has(d) for d in reports.values()):
            del entry["reports"]
            cache.write_build_entry(path.stem, entry)
            problems.append(f"build {path.stem} lost its stored reports ({', '.join(sorted(reports))}); "
                            "`checkout` restores its artifacts and lockfile only")
    return checked, problems


def _kept_builds(cache: Cache, result: GcResult, dry_run: bool) -> tuple[set[str], set[str], set[str]]:
    """(action keys, blob digests) that kept lockfiles need, and the lockfile blobs of builds no longer kept,
    whose index entries are dropped."""
    keys: set[str] = set()
    blobs: set[str] = set()
    dropped: set[str] = set()
    for path, entry in list(cache.iter_builds()):
        alive = [p for p in entry.get("lockfiles", []) if Path(p).is_file()]
        if not alive:
            result.dropped_builds += 1
            dropped |= build_blobs(entry)
            if not dry_run:
                path.unlink(missing_ok=True)
            continue
        result.kept_builds += 1
        blobs |= build_blobs(entry)
        try:
            lock = json.loads(Path(alive[0]).read_text())
        except (OSError, ValueError):
            continue
        for node in lock.get("nodes", {}).values():
            keys.add(node.get("key"))
            blobs.update(node.get("outputs", {}).values())
    return keys, blobs, dropped


class _Holds:
    """What live leases hold, read again on each call: gc asks right before every removal, since a build may
    start while gc runs."""

    def __init__(self, cache: Cache, outputs: dict[str, set[str]]):
        self.cache = cache
        self.dir = cache.root / "leases"
        self.outputs = outputs  # key -> output digests of the records gc listed
        self._later: dict[str, set[str]] = {}  # the same for records written after gc listed them

    def keys(self) -> set[str]:
        """Keys held by live leases now."""
        return held_keys(self.dir)

    def blobs(self, keys: set[str] | None = None) -> set[str]:
        """Output blobs of the records of ``keys`` (default: the keys held now)."""
        out: set[str] = set()
        for key in self.keys() if keys is None else keys:
            if key in self.outputs:
                out |= self.outputs[key]
            elif key in self._later:
                out |= self._later[key]
            else:  # a record the build wrote after gc listed them; none yet means it may be writing it now
                rec, _ = self.cache.read_action(self.cache.action_path(key))
                if rec is not None:
                    out |= self._later.setdefault(key, set(rec.outputs.values()))
        return out


def gc(cache: Cache, older_than_days: float | None = None, max_bytes: int | None = None,
       include_kept: bool = False, dry_run: bool = False) -> GcResult:
    """Remove records unused for ``older_than_days`` and/or least-recently-used ones until the blobs fit in
    ``max_bytes``, then blobs nothing references and stale scratch files.

    What running builds hold (their leases) is kept whatever is asked, ``include_kept`` included; the result's
    ``remaining_bytes`` says whether ``max_bytes`` was reached.
    """
    if not dry_run:
        _writable(cache, "gc")
    result = GcResult(target_bytes=max_bytes)
    kept_keys, kept_blobs, dropped_locks = _kept_builds(cache, result, dry_run)
    if include_kept:
        kept_keys, kept_blobs = set(), set()
    now = time.time()
    records = list_records(cache)
    outputs = {rec.key: set(rec.outputs.values()) for rec in cache.iter_actions()}
    holds = _Holds(cache, outputs)
    leases, dead = read_leases(holds.dir, now)
    result.running_builds = len(leases)
    for path in dead:
        result.removed_leases += 1
        if not dry_run:
            path.unlink(missing_ok=True)
    # Held keys are kept like a kept lockfile's, even with include_kept: removing them breaks a build right now.
    held = set().union(*(lease.keys for lease in leases))
    kept_keys = kept_keys | held
    kept_blobs = kept_blobs | holds.blobs(held)
    doomed: set[str] = set()
    if older_than_days is not None:
        doomed |= {r["key"] for r in records if now - r["last_used"] > older_than_days * 86400}
    doomed -= kept_keys
    if max_bytes is not None:
        # Count references, so a blob shared by several records frees its bytes only with the last of them.
        refs: dict[str, int] = {}
        for key, digests in outputs.items():
            if key not in doomed:
                for d in digests:
                    refs[d] = refs.get(d, 0) + 1
        for d in kept_blobs:
            refs[d] = refs.get(d, 0) + 1
        total = sum(blob_size(cache, d) for d in refs)
        for r in reversed(records):  # least recently used first
            if total <= max_bytes:
                break
            if r["key"] in doomed or r["key"] in kept_keys:
                continue
            doomed.add(r["key"])
            for d in outputs.get(r["key"], ()):
                refs[d] -= 1
                if refs[d] == 0:
                    total -= blob_size(cache, d)
    removed: set[str] = set()
    for key in sorted(doomed):
        if key in holds.keys():  # a build started since gc read the leases and holds this key now
            continue
        removed.add(key)
        result.removed_records += 1
        if not dry_run:
            cache.remove_action(key)
    live: set[str] = set(kept_blobs)
    for key, digests in outputs.items():
        if key not in removed:
            live |= digests
    for _, entry in cache.iter_builds():
        if entry.get("lock") not in dropped_locks:
            live |= build_blobs(entry)
    released = set().union(dropped_locks, *(outputs.get(k, set()) for k in removed))
    for digest in list(cache.blobs.iter_digests()):
        size = blob_size(cache, digest)
        if digest in live:
            result.remaining_bytes += size
            continue
        try:
            # An unreferenced young blob may belong to a build that has not written its record yet.
            young = now - cache.blobs.path(digest).stat().st_mtime < STALE_TMP_SECONDS
        except FileNotFoundError:
            continue
        if (digest in released or not young) and digest not in holds.blobs():
            result.removed_blobs += 1
            result.freed_bytes += size
            if not dry_run:
                cache.blobs.remove(digest)
        else:
            result.remaining_bytes += size
    result.removed_tmp = _clean_tmp(cache, now, dry_run, holds.keys())
    return result


def _clean_tmp(cache: Cache, now: float, dry_run: bool, held: set[str]) -> int:
    """Scratch left by killed builds (run dirs, half-written blobs), once old enough to be surely dead, and
    lock files nobody took for a day (a build touches a lock file when it takes it). The run folder of a held
    key stays however old: its step may simply be long."""
    n = 0
    locks = cache.root / "locks"
    stale_locks = [p for p in locks.iterdir() if now - p.stat().st_mtime > 86400] if locks.is_dir() else []
    running = {f"run-{key[:16]}-" for key in held}
    scratch = [p for p in cache.tmp.iterdir() if now - p.stat().st_mtime > STALE_TMP_SECONDS
               and p.name[:21] not in running] if cache.tmp.is_dir() else []
    for p in stale_locks + scratch:
        n += 1
        if not dry_run:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return n


def format_size(n: float) -> str:
    """Bytes as the units ``parse_size`` reads (binary: 1 MB = 2**20 bytes), e.g. '31.2 MB'."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def parse_size(text: str) -> int:
    """'500MB', '2G', '1.5GiB' or plain bytes -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(float(t))
