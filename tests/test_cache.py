"""The content-addressed store and action cache: atomic, verified, and never trusting a damaged entry."""

from __future__ import annotations

import os
import time

import pytest

from qcompile.cache import ActionRecord, Cache, CorruptBlob, keys
from qcompile.cache.keys import StatMemo, canonical_json, digest_file

from .conftest import after_ctime_tick


def _blob(cache: Cache, tmp_path, content: bytes) -> str:
    src = tmp_path / "src.bin"
    src.write_bytes(content)
    return cache.blobs.put(src)


def _damage(cache: Cache, digest: str, content: bytes) -> None:
    """Overwrite a blob in place, as a disk fault or a careless user would (blobs are read-only)."""
    p = cache.blobs.path(digest)
    after_ctime_tick(p, cache.tmp)  # so the damage changes the stamp recorded when the blob was stored
    os.chmod(p, 0o644)
    p.write_bytes(content)


def test_canonical_json_ignores_key_order():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical_json({"a": [1, {"c": 3, "d": 2}], "b": 1})


def test_put_is_content_addressed_and_idempotent(tmp_path):
    cache = Cache(tmp_path / "c")
    d1 = _blob(cache, tmp_path, b"hello")
    d2 = _blob(cache, tmp_path, b"hello")
    assert d1 == d2 == digest_file(cache.blobs.path(d1))
    assert not list(cache.tmp.glob("blob-*")), "no temp files left behind"


def test_tampered_blob_invalidates_the_record(tmp_path):
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"weights")
    cache.record(ActionRecord("k" * 64, "x", {"out": d}, {}, 0.1, time.time()))
    assert cache.lookup("k" * 64) is not None
    p = cache.blobs.path(d)
    _damage(cache, d, b"weightz")
    assert cache.lookup("k" * 64) is None, "a damaged blob must never be used"
    assert not p.exists() and cache.lookup("k" * 64) is None


def test_truncated_record_is_discarded(tmp_path):
    cache = Cache(tmp_path / "c")
    cache.record(ActionRecord("a" * 64, "x", {}, {"v": 1}, 0.1, time.time()))
    path = cache.root / "actions" / "aa" / ("a" * 64 + ".json")
    path.write_text(path.read_text()[:10])
    assert cache.lookup("a" * 64) is None and not path.exists()


def test_copy_out_detects_corruption(tmp_path):
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"model bytes")
    _damage(cache, d, b"evil bytes!")
    dest = tmp_path / "out" / "model.onnx"
    with pytest.raises(CorruptBlob):
        cache.blobs.copy_out(d, dest)
    assert not dest.exists()


def test_stat_memo_rehashes_only_changed_files(tmp_path, monkeypatch):
    # A file written this instant is "racy" (its stamp may not change on a rewrite within the clock's resolution),
    # and the memo hashes such files every time. Here the file is treated as long written, so the memo is used.
    monkeypatch.setattr(keys, "racy", lambda stamp: False)
    hashed = []
    real = keys.digest_file
    monkeypatch.setattr(keys, "digest_file", lambda path: hashed.append(path) or real(path))
    memo = StatMemo(tmp_path / "memo")
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    d1 = memo.digest(f)
    assert memo.digest(f) == d1 and len(hashed) == 1, "unchanged: the stamp is trusted"
    memo.flush()
    assert StatMemo(tmp_path / "memo").digest(f) == d1 and len(hashed) == 1, "also by the next build"
    after_ctime_tick(f, tmp_path)
    f.write_bytes(b"b" * 1000)  # the same size: the new mtime and ctime tell
    d2 = memo.digest(f)
    assert d2 != d1 and d2 == digest_file(f) and len(hashed) == 2


def test_put_repairs_a_damaged_copy_of_the_same_content(tmp_path):
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"good bytes")
    p = cache.blobs.path(d)
    _damage(cache, d, b"evil bytes")
    assert _blob(cache, tmp_path, b"good bytes") == d
    assert p.read_bytes() == b"good bytes", "a rebuilt output must not be swapped for the damaged copy"
