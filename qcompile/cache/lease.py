"""Leases: a running build says which action keys it uses, so ``cache gc`` never deletes them under it.

A build holds one lease file, ``<cache>/leases/<host>-<pid>-<random>.json``, listing the keys it has looked up
or run so far. The scheduler adds each key *before* it looks the key up, and the file is rewritten atomically
(temp file + ``os.replace``) each time, so a reader sees the old list or the new one, never half of one. The
file goes away when the build ends. ``gc`` treats held keys, and the blobs their records name, like the keys
of a kept lockfile.

A lease is live while its file was written less than :data:`LIVE_SECONDS` ago and, when it was written on this
host, its process still exists. A build killed with SIGKILL leaves its lease behind; gc drops such dead leases.

What this does not close (check-then-delete without a lock that builds and gc share):

* gc re-reads the leases right before it removes each record and each blob, but not atomically with the
  removal: a build that takes its lease and reads a record or blob in the instant between that re-read and
  the unlink can still lose it. It then fails with a missing blob (its step output is never wrong: lookups
  and copies verify digests) and the next build reruns the step.
* A step that stores an output blob identical to one gc is releasing, after gc's re-read and before the step
  writes its record, can lose that blob the same way.
* The lease covers ``scheduler.execute``. Work a caller does after it returns (copying artifacts out, then
  registering the lockfile) is covered only when the caller holds ``cache.lease()`` around it too (leases
  are reentrant per :class:`~qcompile.cache.Cache`).
* A lease not rewritten for a day counts as dead, so one step running longer than a day loses its protection.
  On another host (a cache shared over a network filesystem) the process cannot be checked: only the age
  counts, clock skew between hosts shifts it, and the filesystem's attribute caching may delay what gc sees.
* A build on a cache it may not write (read-only, see ``journal``) writes no lease: whoever can write that cache
  and runs gc there does not see the build.
* On this host a recycled pid can keep a dead lease live until it is a day old (that keeps too much, never
  too little). The reverse is worse: containers that share one host name but not their pid namespace, and
  one cache, see each other's leases as dead. Give them distinct host names (Docker's default does).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .journal import Journal

LIVE_SECONDS = 86400  # a lease not rewritten for a day is dead even when its pid cannot be checked


def this_host() -> str:
    """The host name written into leases (the pid check only means something on the same host)."""
    return socket.gethostname()


class Lease:
    """The lease of one running build; a reentrant context manager (the file exists while it is entered).

    ``journal`` notes the folders the lease makes (and says when the cache is read-only: then no file is written,
    and gc cannot see the build). ``on_close`` is called with the exception that ends the outermost block (None
    when it ends well), once the file is gone.
    """

    def __init__(self, directory: Path, tmp: Path, journal: Journal | None = None,
                 on_close: Callable[[BaseException | None], None] | None = None):
        self.dir = Path(directory)
        self.tmp = Path(tmp)
        self.journal = journal or Journal(self.dir.parent)
        self.on_close = on_close
        self.host = this_host()
        self.pid = os.getpid()
        safe_host = re.sub(r"[^A-Za-z0-9_.]+", "_", self.host) or "host"
        self.path = self.dir / f"{safe_host}-{self.pid}-{secrets.token_hex(6)}.json"
        self.keys: set[str] = set()
        self._depth = 0
        self._written = False

    @property
    def open(self) -> bool:
        """True while some ``with`` block holds the lease."""
        return self._depth > 0

    def __enter__(self) -> Lease:
        if self._depth == 0:
            self._write()  # the file appears at once, before any key, so gc sees the build is running
        self._depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._depth -= 1
        if self._depth == 0:
            if self._written:
                self.path.unlink(missing_ok=True)
                self._written = False
            if self.on_close is not None:
                self.on_close(exc)

    def hold(self, key: str) -> None:
        """Add ``key`` to the lease; call it before looking the key up, so gc sees it before the build uses it."""
        if not self.open:
            raise RuntimeError("hold() outside the lease's with block")
        if key not in self.keys:
            self.keys.add(key)
        # Rewritten even for a held key: the new mtime keeps a long build's lease from looking a day old.
        self._write()

    def _write(self) -> None:
        if self.journal.read_only:
            return
        body = json.dumps({"host": self.host, "pid": self.pid, "written": time.time(), "keys": sorted(self.keys)})
        # No fsync: after a crash the lease is dead anyway, and gc drops it.
        try:
            self.journal.write(self.path, body.encode())
        except OSError as e:
            if not self.journal.refused(e):  # the first write finds out that the cache is read-only
                raise
            return
        self._written = True


@dataclass(frozen=True)
class LeaseInfo:
    """A lease file as gc reads it."""

    path: Path
    host: str
    pid: int
    keys: frozenset[str]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return False
    return True


def read_leases(directory: Path, now: float | None = None) -> tuple[list[LeaseInfo], list[Path]]:
    """(live leases, paths of dead ones) under ``directory``; unreadable lease files count as dead."""
    now = time.time() if now is None else now
    live: list[LeaseInfo] = []
    dead: list[Path] = []
    directory = Path(directory)
    host = this_host()
    for p in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            age = now - p.stat().st_mtime
            raw = json.loads(p.read_text())
            info = LeaseInfo(p, str(raw["host"]), int(raw["pid"]), frozenset(str(k) for k in raw["keys"]))
        except FileNotFoundError:
            continue  # the build ended while we listed
        except (OSError, ValueError, KeyError, TypeError):
            dead.append(p)
            continue
        if age >= LIVE_SECONDS or (info.host == host and not _pid_alive(info.pid)):
            dead.append(p)
        else:
            live.append(info)
    return live, dead


def held_keys(directory: Path) -> set[str]:
    """Every key a live lease holds now."""
    live, _ = read_leases(directory)
    return set().union(*(lease.keys for lease in live))
