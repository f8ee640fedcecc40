"""Content-addressed store: blobs named by their sha256, written atomically, verified on every read."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .keys import digest_file


class CorruptBlob(Exception):
    """A blob's content no longer matches its name; it has been removed."""


class BlobStore:
    """Files keyed by their content digest under ``root/ab/abcdef...``."""

    def __init__(self, root: Path, tmp: Path):
        self.root = root
        self.tmp = tmp

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
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        os.close(fd)
        tmp = Path(tmp_name)
        h = hashlib.sha256()
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    h.update(chunk)
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
            digest = h.hexdigest()
            dest = self.path(digest)
            if dest.is_file() and digest_file(dest) == digest:
                tmp.unlink()
            else:  # new, or an existing copy that was damaged: the fresh bytes replace it
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, dest)
        except BaseException:  # a full disk, Ctrl-C: no half-written scratch file stays behind
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def verify(self, digest: str) -> bool:
        """True when the blob exists and its content matches; a damaged blob is deleted."""
        p = self.path(digest)
        if not p.is_file():
            return False
        if digest_file(p) != digest:
            p.unlink(missing_ok=True)
            return False
        return True

    def copy_out(self, digest: str, dest: Path) -> None:
        """Copy a verified blob to ``dest`` (atomically, never leaving a half-written file there)."""
        src = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        h = hashlib.sha256()
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    h.update(chunk)
                    fout.write(chunk)
        except FileNotFoundError as e:
            tmp.unlink(missing_ok=True)
            raise CorruptBlob(digest) from e
        if h.hexdigest() != digest:
            tmp.unlink(missing_ok=True)
            src.unlink(missing_ok=True)
            raise CorruptBlob(digest)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)

    def remove(self, digest: str) -> int:
        """Delete a blob; return the bytes freed."""
        p = self.path(digest)
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
