"""What one build created in the cache, so a build that ends with bad input can take it all back; and whether the
cache may be written at all.

A build that exits 2 leaves the cache as it found it (ARCHITECTURE.md): every file and folder the cache code
creates is noted here, and :meth:`qcompile.cache.Cache.lease` removes them again when the build's lease closes on
bad input. Folders are removed only while empty (``rmdir``), so a folder another build has just written into
stays. The reverse race, a folder removed between another build's ``mkdir`` and its write into it, is why the
writers here make their folder again and retry when it vanished.

A cache is read-only when it was opened so, when its folder carries no write permission bit (``chmod -R a-w``,
which stops no write of root's, is honoured all the same), or when a first write is refused (a read-only mount,
a folder of another user): see :attr:`Journal.read_only`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import naming

_REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM}
_TRIES = 3


class Journal:
    """The files and folders created in one cache since the current build began, and its read-only state."""

    def __init__(self, root: Path, read_only: bool = False):
        self.root = Path(root)
        self._why: str | None = "it was opened read-only" if read_only else None
        self._checked = read_only
        self.files: list[Path] = []
        self.dirs: list[Path] = []

    @property
    def read_only(self) -> str | None:
        """Why the cache must not be written, or None when it may be."""
        if not self._checked:
            self._checked = True
            try:
                if not self.root.stat().st_mode & 0o222:
                    self._why = "its folder has no write permission"
                elif os.statvfs(self.root).f_flag & os.ST_RDONLY:
                    # A read-only mount keeps its write bits; asking the file system finds it before any write.
                    self._why = "read-only file system"
            except (OSError, AttributeError):  # not there yet (or no statvfs): found out by trying to write
                pass
        return self._why

    def refused(self, e: OSError) -> bool:
        """True when ``e`` says this cache cannot be written here (a read-only file system, no permission); the
        cache counts as read-only from then on."""
        if e.errno not in _REFUSED:
            return False
        self._checked = True
        self._why = self._why or (e.strerror or "writing was refused").lower()
        return True

    def clear(self) -> None:
        """Start a new build: forget what earlier ones created."""
        self.files.clear()
        self.dirs.clear()

    def created(self, path: Path) -> None:
        """Note a file this build created (written by the caller)."""
        self.files.append(Path(path))

    def make_dirs(self, path: Path) -> None:
        """Make ``path`` and its missing parents, noting each folder made."""
        for attempt in range(_TRIES):
            missing = []
            p = Path(path)
            while not p.is_dir() and p.parent != p:
                missing.append(p)
                p = p.parent
            try:
                for d in reversed(missing):
                    try:
                        d.mkdir()
                    except FileExistsError:
                        if not d.is_dir():  # a file where the folder should be: the caller names it
                            raise
                        continue  # made by another build a moment ago: not ours to remove
                    self.dirs.append(d)
                return
            except FileNotFoundError:  # a parent vanished (another build's clean-up): make it again
                if attempt == _TRIES - 1:
                    raise

    def write(self, dest: Path, data: bytes, fsync: bool = False) -> None:
        """Write ``dest`` atomically: a temp file beside it, renamed over it (its folder is made, and made again if
        another build's clean-up removed it meanwhile). An OS error names ``dest``."""
        dest = Path(dest)
        existed = dest.exists()
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        for attempt in range(_TRIES):
            self.make_dirs(dest.parent)
            try:
                with naming(dest):
                    with open(tmp, "wb") as f:
                        f.write(data)
                        if fsync:
                            f.flush()
                            os.fsync(f.fileno())
                    os.replace(tmp, dest)
            except FileNotFoundError:
                tmp.unlink(missing_ok=True)
                if attempt == _TRIES - 1:
                    raise
                continue
            except BaseException:  # a full disk, Ctrl-C: no half-written temp file stays behind
                tmp.unlink(missing_ok=True)
                raise
            if not existed:
                self.files.append(dest)
            return

    def remove_dirs(self) -> None:
        """Remove the folders this build made, deepest first, each only while it is empty."""
        for d in sorted(set(self.dirs), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:  # not empty (another build uses it) or already gone
                pass
