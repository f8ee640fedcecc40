"""Digests: canonical JSON, file content hashes (with a stat memo), and the environment fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values always hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def digest_json(obj: Any) -> str:
    """sha256 hex digest of an object's canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def digest_file(path: Path) -> str:
    """sha256 hex digest of a file's content, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class StatMemo:
    """Remembers the digest of user files by (path, size, mtime, inode) so large files are not rehashed each build.

    The memo is an optimisation only: a stale or damaged memo entry costs a rehash, never a wrong digest,
    because any change of size, mtime or inode misses the memo.
    """

    def __init__(self, root: Path):
        self.root = root

    def digest(self, path: Path) -> str:
        """Content digest of ``path``, from the memo when the file is unchanged."""
        path = Path(path).resolve()
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.root / (hashlib.sha256(str(path).encode()).hexdigest() + ".json")
        try:
            memo = json.loads(entry.read_text())
            if memo["stamp"] == stamp and memo["path"] == str(path):
                return memo["digest"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        digest = digest_file(path)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(path), "stamp": stamp, "digest": digest}))
        os.replace(tmp, entry)
        return digest


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name: latency results depend on it, so benchmark keys include it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
