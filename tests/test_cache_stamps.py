"""Blobs are hashed once and then trusted by their stat stamp; any write to a blob makes it hashed again, and
``cache verify`` hashes everything."""

from __future__ import annotations

import json
import os

import pytest

from qcompile.cache import Cache, manage
from qcompile.cache import store as store_mod

from .conftest import after_ctime_tick


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "cache")


def _blob(cache: Cache, tmp_path, data: bytes = b"model bytes" * 1000) -> str:
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    return cache.blobs.put(src)


def _count_hashes(monkeypatch) -> list:
    calls = []
    real = store_mod.digest_file

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(store_mod, "digest_file", counting)
    return calls


def test_a_stored_blob_is_trusted_without_reading_it(cache, tmp_path, monkeypatch):
    digest = _blob(cache, tmp_path)
    fresh = Cache(cache.root)  # another process: only the on-disk stamp is shared
    calls = _count_hashes(monkeypatch)
    assert fresh.blobs.verify(digest)
    fresh.blobs.copy_out(digest, tmp_path / "out" / "model.onnx")
    assert calls == []
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"model bytes" * 1000


def test_an_edited_blob_is_hashed_again_and_removed(cache, tmp_path, monkeypatch):
    digest = _blob(cache, tmp_path)
    p = cache.blobs.path(digest)
    after_ctime_tick(p, tmp_path)  # an edit in the tick the blob was stored in would keep its ctime too
    before = p.stat()
    os.chmod(p, 0o644)
    p.write_bytes(b"x" * before.st_size)  # same size
    os.utime(p, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime: only ctime tells
    fresh = Cache(cache.root)
    calls = _count_hashes(monkeypatch)
    assert not fresh.blobs.verify(digest)
    assert len(calls) == 1 and not p.exists()
    with pytest.raises(store_mod.CorruptBlob):
        fresh.blobs.copy_out(digest, tmp_path / "copy")


def test_copy_out_of_an_untrusted_blob_hashes_it(cache, tmp_path):
    """Without a recorded stamp, copying out checks the bytes (a damaged blob is refused) and, when they match,
    records the stamp so the next use reads nothing."""
    digest = _blob(cache, tmp_path)
    for f in (cache.root / "verified").rglob("*"):
        if f.is_file():
            f.unlink()
    fresh = Cache(cache.root)
    assert not fresh.blobs.trusted(digest)
    fresh.blobs.copy_out(digest, tmp_path / "a")
    assert fresh.blobs.trusted(digest) and Cache(cache.root).blobs.trusted(digest)
    # Damaged and untrusted again: the copy is refused and the blob removed.
    p = cache.blobs.path(digest)
    after_ctime_tick(p, tmp_path)
    os.chmod(p, 0o644)
    p.write_bytes(b"y" * p.stat().st_size)
    with pytest.raises(store_mod.CorruptBlob):
        Cache(cache.root).blobs.copy_out(digest, tmp_path / "b")
    assert not p.exists() and not (tmp_path / "b").exists()


def test_cache_verify_hashes_even_trusted_blobs(cache, tmp_path):
    digest = _blob(cache, tmp_path)
    p = cache.blobs.path(digest)
    os.chmod(p, 0o644)
    p.write_bytes(b"rotten" + p.read_bytes()[6:])
    # Bit rot under an unchanged stamp, which stat cannot see: the recorded stamp is made to match.
    stamp_file = cache.root / "verified" / digest[:2] / digest
    st = p.stat()
    stamp_file.write_text(json.dumps([st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]))
    assert Cache(cache.root).blobs.verify(digest)  # trusted by stamp...
    checked, problems = manage.verify(Cache(cache.root))  # ...until the full check
    assert checked >= 1 and any(digest[:16] in line for line in problems)
    assert not p.exists() and not stamp_file.exists()


def test_onnx_signature_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    import time

    from qcompile.kinds.model import _onnx_signature as onnx_signature

    from .conftest import export_tiny_onnx

    monkeypatch.setenv("QCOMPILE_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "net.onnx"
    export_tiny_onnx(model)
    time.sleep(2.1)  # older than the stamp's racy window, so it may be remembered
    calls = []
    real = onnx_signature._inspect
    monkeypatch.setattr(onnx_signature, "_inspect", lambda *a: calls.append(a) or real(*a))
    first, _ = onnx_signature.inspect_onnx(model)
    again, _ = onnx_signature.inspect_onnx(model)
    assert len(calls) == 1 and again == first
    export_tiny_onnx(model, batch=4)  # replaced in place by a model with a fixed batch of 4
    changed, _ = onnx_signature.inspect_onnx(model)
    assert len(calls) == 2 and changed.inputs[0].shape[0] == 4 != first.inputs[0].shape[0]
