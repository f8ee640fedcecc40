"""Digests: canonical JSON, file content hashes (with a stat memo), and the environment fingerprint."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
RACY_SECONDS = 2.0  # files changed this recently are hashed again next time instead of trusted by stamp


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values always hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def digest_json(obj: Any) -> str:
    """sha256 hex digest of an object's canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def stamp_of(st: os.stat_result) -> list[int]:
    """A file's stat stamp: size, mtime, ctime, inode, device. Any write to the file changes its ctime, which no
    user call can set back (see ``StatMemo``)."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def stat_stamp(path: Path) -> list[int] | None:
    """``stamp_of`` the file at ``path``, or None when it cannot be stat'ed."""
    try:
        return stamp_of(Path(path).stat())
    except OSError:
        return None


def racy(stamp: list[int]) -> bool:
    """True for a file changed within the stamp's resolution: a rewrite then could keep the same stamp (git's
    "racily clean"), so it must not be trusted by stamp yet."""
    return time.time() - stamp[2] / 1e9 < RACY_SECONDS


def digest_file(path: Path) -> str:
    """sha256 hex digest of a file's content, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class StatMemo:
    """Remembers the digest of user files by their stat stamp so large files are not rehashed each build.

    The stamp is (size, mtime, ctime, inode, device), as git's index and Bazel's digest cache use: a rewrite in
    place that keeps the size and restores the old mtime (``touch -r``, ``os.utime``) still changes the ctime,
    which no user call can set. A stale or damaged memo entry costs a rehash, never a wrong digest.

    New entries wait in memory until ``flush``: a build that is rejected as bad input leaves no memo entry.
    """

    def __init__(self, root: Path):
        self.root = root
        self._pending: dict[Path, dict[str, Any]] = {}

    def digest(self, path: Path) -> str:
        """Content digest of ``path``, from the memo when the file is unchanged."""
        path = Path(path).resolve()
        stamp = stamp_of(path.stat())  # a missing or unreadable file raises, as callers expect
        entry = self.root / (hashlib.sha256(str(path).encode()).hexdigest() + ".json")
        try:
            memo = json.loads(entry.read_text())
            if memo["stamp"] == stamp and memo["path"] == str(path):
                return memo["digest"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        pending = self._pending.get(entry)
        if pending is not None and pending["stamp"] == stamp:
            return pending["digest"]
        digest = digest_file(path)
        if not racy(stamp):
            self._pending[entry] = {"path": str(path), "stamp": stamp, "digest": digest}
        return digest

    def flush(self) -> None:
        """Write the entries learnt since the last flush (after a build that was not rejected)."""
        pending, self._pending = self._pending, {}
        for entry, memo in pending.items():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo))
            os.replace(tmp, entry)


@functools.lru_cache(maxsize=None)
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name: latency results depend on it, so benchmark keys include it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def cpu_isa() -> str:
    """The instruction set that decides ORT's fast int8 kernels: avx512_vnni, avx_vnni, avx2, x86, arm64 or
    other (read from /proc/cpuinfo's flags; no library import)."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return "other"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    for isa in ("avx512_vnni", "avx_vnni", "avx2"):
        if isa in flags:
            return isa
    return "x86"


def env_fingerprint(libraries: tuple[str, ...], host: bool = False) -> dict[str, Any]:
    """Versions of the libraries a step uses, read from package metadata (no import of the library itself).

    ``host`` adds the CPU model and core count, for steps whose output is a measurement of this machine.
    """
    env: dict[str, Any] = {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "machine": platform.machine(),
    }
    for lib in sorted(libraries):
        env[lib] = _version(lib)
    if host:
        env["cpu"] = cpu_model()
        env["cores"] = os.cpu_count()
    return env
