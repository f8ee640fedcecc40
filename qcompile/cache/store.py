"""Content-addressed store: blobs named by their sha256, written atomically, verified before use.

Verifying a blob by hashing it costs a read of every byte (300 MB on a ResNet-50 build) on every cached build.
As Bazel's and DVC's stores do, a blob whose content was hashed is remembered with its stat stamp (size,
mtime, ctime, inode): while the stamp is unchanged the blob is trusted without reading it. Any write to the
file changes its ctime, which no user call can set back, so an edited blob is hashed again (and removed when
it no longer matches). ``qcompile cache verify`` hashes everything regardless, which catches what stat cannot
(bit rot under an unchanged stamp).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import naming
from .journal import Journal
from .keys import digest_file, stat_stamp


class CorruptBlob(Exception):
    """A blob's content no longer matches its name; it has been removed."""


class BlobStore:
    """Files keyed by their content digest under ``root/ab/abcdef...``."""

    def __init__(self, root: Path, tmp: Path, stamps: Path | None = None, journal: Journal | None = None):
        self.root = root
        self.tmp = tmp
        self.stamps = stamps or root.with_name("verified")
        self.journal = journal or Journal(root.parent)
        self._trusted: dict[str, list[int]] = {}  # digest -> stamp, hashed by this process

    def _stamp_file(self, digest: str) -> Path:
        return self.stamps / digest[:2] / digest

    def _remember(self, digest: str) -> None:
        """Record that ``digest``'s blob, as it is now on disk, was hashed and matched."""
        stamp = stat_stamp(self.path(digest))
        if stamp is None:
            return
        self._trusted[digest] = stamp
        if self.journal.read_only:  # trust stays in this process only
            return
        try:
            self.journal.write(self._stamp_file(digest), json.dumps(stamp).encode())
        except OSError:  # a stamp saves a re-hash, no more: a full disk or a refused write only costs that
            pass

    def _forget(self, digest: str) -> None:
        self._trusted.pop(digest, None)
        if not self.journal.read_only:
            self._stamp_file(digest).unlink(missing_ok=True)

    def trusted(self, digest: str) -> bool:
        """True when the blob exists and its stat stamp is the one recorded when it was last hashed."""
        stamp = stat_stamp(self.path(digest))
        if stamp is None:
            return False
        if self._trusted.get(digest) == stamp:
            return True
        try:
            if json.loads(self._stamp_file(digest).read_text()) == stamp:
                self._trusted[digest] = stamp
                return True
        except (OSError, ValueError):
            pass
        return False

    def path(self, digest: str) -> Path:
        """Where the blob named ``digest`` lives (whether or not it exists)."""
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        """True when the blob exists (not verified)."""
        return self.path(digest).is_file()

    def put(self, src: Path) -> str:
        """Move ``src`` into the store (or drop it when the blob exists) and return its digest.

        The file is hashed, fsynced and renamed into place, so a crash leaves either no blob or a whole one.
        """
        tmp = self._scratch()
        h = hashlib.sha256()
        try:
            with open(src, "rb") as fin, naming(tmp), open(tmp, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    h.update(chunk)
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
            digest = h.hexdigest()
            dest = self.path(digest)
            if dest.is_file() and (self.trusted(digest) or digest_file(dest) == digest):
                tmp.unlink()
            else:  # new, or an existing copy that was damaged: the fresh bytes replace it
                new = not dest.exists()
                os.chmod(tmp, 0o444)
                self._place(tmp, dest)
                if new:
                    self.journal.created(dest)
            self._remember(digest)
        except BaseException:  # a full disk, Ctrl-C: no half-written scratch file stays behind
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def _scratch(self) -> Path:
        """A new empty file in the scratch folder (made, and made again if another build's clean-up removed it)."""
        for attempt in range(3):
            self.journal.make_dirs(self.tmp)
            try:
                with naming(self.tmp):
                    fd, name = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            os.close(fd)
            return Path(name)
        raise AssertionError("unreachable")

    def _place(self, tmp: Path, dest: Path) -> None:
        """Rename ``tmp`` to ``dest``, making its folder (again, if another build's clean-up removed it)."""
        for attempt in range(3):
            self.journal.make_dirs(dest.parent)
            try:
                with naming(dest):
                    os.replace(tmp, dest)
                return
            except FileNotFoundError:
                if attempt == 2 or not tmp.exists():
                    raise

    def verify(self, digest: str, full: bool = False) -> bool:
        """True when the blob exists and its content matches; a damaged blob is deleted.

        Unless ``full``, a blob whose stat stamp is unchanged since it was last hashed is trusted unread.
        """
        p = self.path(digest)
        if not p.is_file():
            self._forget(digest)
            return False
        if not full and self.trusted(digest):
            return True
        if digest_file(p) != digest:
            self._discard(digest)
            return False
        self._remember(digest)
        return True

    def copy_out(self, digest: str, dest: Path) -> None:
        """Copy a blob to ``dest`` (atomically, never leaving a half-written file there), hashing it on the way
        unless its stamp is trusted."""
        src = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            with naming(dest):
                self._copy(digest, src, tmp)
        except FileNotFoundError as e:
            tmp.unlink(missing_ok=True)
            raise CorruptBlob(digest) from e
        except BaseException:  # a full disk, Ctrl-C: no half-written copy stays beside the destination
            tmp.unlink(missing_ok=True)
            raise
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)

    def _copy(self, digest: str, src: Path, tmp: Path) -> None:
        if self.trusted(digest):
            shutil.copyfile(src, tmp)  # the kernel copies (copy_file_range); nothing to hash
            return
        h = hashlib.sha256()
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(1 << 20):
                h.update(chunk)
                fout.write(chunk)
        if h.hexdigest() != digest:
            tmp.unlink(missing_ok=True)
            self._discard(digest)
            raise CorruptBlob(digest)
        self._remember(digest)

    def _discard(self, digest: str) -> None:
        """Delete a damaged blob (a read-only cache keeps it: it is just not used)."""
        if not self.journal.read_only:
            self.path(digest).unlink(missing_ok=True)
        self._forget(digest)

    def remove(self, digest: str) -> int:
        """Delete a blob; return the bytes freed."""
        p = self.path(digest)
        self._forget(digest)
        try:
            size = p.stat().st_size
            p.unlink()
            return size
        except FileNotFoundError:
            return 0

    def iter_digests(self):
        """Digests of every blob in the store."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir():
                for f in sorted(sub.iterdir()):
                    yield f.name


def rmtree_quiet(path: Path) -> None:
    """Remove a folder tree, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)
