"""Trusting the cache: records verified like blobs, leases that keep gc off a running build's entries, verify of
records and the build index, and gc saying when it could not reach its size target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qcompile.cache import ActionRecord, Cache, manage
from qcompile.cache.keys import canonical_json, digest_json
from qcompile.cache.lease import read_leases

from .conftest import REPO, run_cli

K1, K2 = "1" * 64, "2" * 64


def _blob(cache: Cache, tmp_path: Path, content: bytes) -> str:
    src = tmp_path / "src.bin"
    src.write_bytes(content)
    return cache.blobs.put(src)


def _record(cache: Cache, key: str, outputs: dict[str, str], result: dict | None = None) -> ActionRecord:
    rec = ActionRecord(key, "quantize.ort_static", outputs, result or {}, 0.5, time.time())
    cache.record(rec)
    return rec


def _edit_record(cache: Cache, key: str, edit) -> None:
    """Change a stored record in place and keep its old digest, as a disk fault or a hand edit would."""
    p = cache.action_path(key)
    raw = json.loads(p.read_text())
    edit(raw)
    p.write_text(canonical_json(raw))


def _leases(cache: Cache) -> list[Path]:
    d = cache.root / "leases"
    return sorted(d.glob("*.json")) if d.is_dir() else []


def _register(cache: Cache, tmp_path: Path, name: str, nodes: dict[str, tuple[str, dict[str, str]]]) -> Path:
    """A kept build: its lockfile on disk (as ``build`` writes it) registered in the build index."""
    lock = tmp_path / name / "qcompile.lock.json"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"build_id": name,
                                "nodes": {n: {"key": k, "outputs": o} for n, (k, o) in nodes.items()}}))
    cache.register_build(name, lock)
    return lock


# ---------------------------------------------------------------------------------------------- record digests
def test_record_carries_the_digest_of_its_own_content(tmp_path):
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"model")
    _record(cache, K1, {"model": d}, {"accuracy": 0.9812})
    raw = json.loads(cache.action_path(K1).read_text())
    digest = raw.pop("digest")
    assert digest == digest_json(raw)
    rec = cache.lookup(K1, outputs=["model"])
    assert rec is not None and rec.result == {"accuracy": 0.9812} and rec.outputs == {"model": d}


def test_one_changed_digit_in_a_result_is_discarded(tmp_path):
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"model")
    _record(cache, K1, {"model": d}, {"accuracy": 0.9812})
    p = cache.action_path(K1)
    p.write_text(p.read_text().replace("0.9812", "0.9813"))
    assert [r.key for r in cache.iter_actions()] == [], "iter_actions skips a record that fails its digest"
    assert cache.lookup(K1) is None, "a changed measurement must never be replayed"
    assert not p.exists(), "the damaged record is removed, so the step is rebuilt"
    assert cache.blobs.has(d), "the intact blob stays"


def test_an_output_swapped_for_another_intact_blob_is_discarded(tmp_path):
    cache = Cache(tmp_path / "c")
    good = _blob(cache, tmp_path, b"int8 model")
    other = _blob(cache, tmp_path, b"fp32 model")
    _record(cache, K1, {"model": good})
    _edit_record(cache, K1, lambda raw: raw["outputs"].update(model=other))
    assert cache.blobs.verify(other), "the blob it now names is itself intact"
    assert cache.lookup(K1) is None and not cache.action_path(K1).exists()


def test_a_renamed_output_is_discarded(tmp_path):
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"model")
    _record(cache, K1, {"model": d})
    _record(cache, K2, {"model": d})
    # Renamed in the stored record: the digest catches it.
    _edit_record(cache, K1, lambda raw: raw.update(outputs={"weights": d}))
    assert cache.lookup(K1, outputs=["weights"]) is None and not cache.action_path(K1).exists()
    # Intact record, but the step now declares another name: a miss, not an error once the step's outputs are read.
    assert cache.lookup(K2, outputs=["model"]) is not None
    assert cache.lookup(K2, outputs=["model", "labels"]) is None
    assert not cache.action_path(K2).exists()


def test_a_record_without_digest_is_discarded(tmp_path):
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"model")
    old = ActionRecord(K1, "quantize.ort_static", {"model": d}, {"accuracy": 0.98}, 0.5, time.time())
    p = cache.action_path(K1)
    p.parent.mkdir(parents=True)
    p.write_text(canonical_json(old.__dict__))  # the format records had before they carried a digest
    assert list(cache.iter_actions()) == []
    assert cache.lookup(K1) is None and not p.exists()


# ---------------------------------------------------------------------------------------------- verify
def test_verify_removes_damaged_records_and_orphaned_build_entries(tmp_path):
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"model")
    _record(cache, K1, {"model": d}, {"accuracy": 0.5})
    _record(cache, K2, {"model": d}, {"accuracy": 0.7})
    _edit_record(cache, K2, lambda raw: raw["result"].update(accuracy=0.8))
    _register(cache, tmp_path, "b-ok", {"q": (K1, {"model": d})})
    _register(cache, tmp_path, "b-lost", {"q": (K1, {"model": d})})
    lost = cache.find_build("b-lost")["lock"]
    _register(cache, tmp_path, "b-garbled", {})
    (cache.root / "builds" / "b-garbled.json").write_text("{not json")
    # b-lost's lockfile blob goes (b-ok's lockfile has other content, so its blob is another one).
    assert lost != cache.find_build("b-ok")["lock"]
    cache.blobs.remove(lost)

    checked, problems = manage.verify(cache)
    text = "\n".join(problems)
    assert len(problems) == 3, text
    assert f"record {K2[:12]}" in text and "digest" in text
    assert "b-lost" in text and "b-garbled" in text and "b-ok" not in text
    assert checked >= 2 + 2 + 3, "blobs, records and build entries are all checked"
    assert cache.lookup(K1) is not None and not cache.action_path(K2).exists()
    assert cache.find_build("b-ok") is not None
    assert not (cache.root / "builds" / "b-lost.json").exists()
    assert not (cache.root / "builds" / "b-garbled.json").exists()
    assert manage.verify(cache)[1] == [], "a second verify finds nothing left to fix"


# ---------------------------------------------------------------------------------------------- leases and gc
def test_lease_lists_its_keys_while_open_and_is_reentrant(tmp_path):
    cache = Cache(tmp_path / "c")
    with cache.lease() as lease:
        assert len(_leases(cache)) == 1, "the lease exists as soon as the build starts"
        lease.hold(K1)
        with cache.lease() as inner:  # a caller around scheduler.execute and execute itself share one lease
            assert inner is lease
            inner.hold(K2)
        assert _leases(cache), "leaving the inner block keeps the outer one's lease"
        raw = json.loads(_leases(cache)[0].read_text())
        assert raw["keys"] == sorted([K1, K2]) and raw["pid"] == os.getpid()
        assert not list(cache.tmp.glob("lease-*")), "no temp files left by the atomic writes"
    assert _leases(cache) == []
    with cache.lease() as again:
        assert again is not lease and again.keys == set(), "a new build gets a fresh lease"


def test_gc_keeps_what_a_live_lease_holds_until_it_is_closed(tmp_path):
    cache = Cache(tmp_path / "c")
    held = _blob(cache, tmp_path, b"held model" * 100)
    free = _blob(cache, tmp_path, b"free model" * 100)
    _record(cache, K1, {"model": held})
    _record(cache, K2, {"model": free})
    with cache.lease() as lease:
        lease.hold(K1)
        res = manage.gc(cache, older_than_days=0, max_bytes=0)
        assert res.running_builds == 1 and res.removed_records == 1
        assert cache.lookup(K1) is not None, "the running build's record and blob survive"
        assert cache.action_path(K2).exists() is False and not cache.blobs.has(free)
        assert res.missed_target and res.remaining_bytes == len(b"held model" * 100)
    res = manage.gc(cache, older_than_days=0, max_bytes=0)
    assert res.running_builds == 0 and res.removed_records == 1 and not res.missed_target
    assert not cache.action_path(K1).exists() and not cache.blobs.has(held)
    assert res.remaining_bytes == 0


def test_gc_sees_a_build_that_starts_while_it_runs(tmp_path, monkeypatch):
    """The lease is read again right before a removal: a build that takes it after gc listed the leases wins."""
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"model" * 100)
    _record(cache, K1, {"model": d})
    lease = cache.lease()
    real_read = manage.read_leases

    def read_then_build_starts(directory, now=None):
        found = real_read(directory, now)
        lease.__enter__()  # a build starts right after gc has read the leases, and looks K1 up
        lease.hold(K1)
        return found

    monkeypatch.setattr(manage, "read_leases", read_then_build_starts)
    try:
        res = manage.gc(cache, older_than_days=0, max_bytes=0)
        assert res.running_builds == 0, "no build was running when gc read the leases"
        assert res.removed_records == 0 and cache.lookup(K1) is not None and cache.blobs.has(d)
    finally:
        lease.__exit__(None, None, None)


def test_a_lease_left_by_a_killed_build_is_ignored_and_removed(tmp_path):
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"model")
    _record(cache, K1, {"model": d})
    code = (f"import os; from qcompile.cache import Cache; lease = Cache({str(cache.root)!r}).lease().__enter__(); "
            f"lease.hold({K1!r}); os._exit(0)")  # dies holding the lease, as a build killed with SIGKILL would
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
    assert len(_leases(cache)) == 1
    live, dead = read_leases(cache.root / "leases")
    assert live == [] and dead == _leases(cache)

    dry = manage.gc(cache, older_than_days=0, dry_run=True)
    assert dry.removed_leases == 1 and dry.removed_records == 1 and dry.running_builds == 0
    assert len(_leases(cache)) == 1 and cache.lookup(K1) is not None, "dry run changes nothing"
    res = manage.gc(cache, older_than_days=0)
    assert res.removed_leases == 1 and _leases(cache) == []
    assert not cache.action_path(K1).exists() and not cache.blobs.has(d)


def test_a_lease_of_another_host_counts_until_it_is_a_day_old(tmp_path):
    cache = Cache(tmp_path / "c")
    d = _blob(cache, tmp_path, b"model")
    _record(cache, K1, {"model": d})
    with cache.lease() as lease:
        lease.hold(K1)
        path = lease.path
        # The same lease as another machine sharing the cache would write it: its pid means nothing here.
        raw = json.loads(path.read_text()) | {"host": "elsewhere.example", "pid": 999_999_999}
        other = path.with_name("elsewhere.example-1-abc.json")
        other.write_text(json.dumps(raw))
    assert _leases(cache) == [other]
    assert manage.gc(cache, older_than_days=0).removed_records == 0 and cache.lookup(K1) is not None
    two_days_ago = time.time() - 2 * 86400
    os.utime(other, (two_days_ago, two_days_ago))
    res = manage.gc(cache, older_than_days=0)
    assert res.removed_leases == 1 and res.removed_records == 1 and _leases(cache) == []


def test_gc_keeps_the_run_folder_of_a_held_key(tmp_path):
    cache = Cache(tmp_path / "c")
    held_run = cache.tmp / f"run-{K1[:16]}-4242"
    dead_run = cache.tmp / f"run-{K2[:16]}-4243"
    old = time.time() - 2 * manage.STALE_TMP_SECONDS
    for p in (held_run, dead_run):
        p.mkdir(parents=True)
        os.utime(p, (old, old))
    with cache.lease() as lease:
        lease.hold(K1)  # a step that has been training for two hours
        assert manage.gc(cache).removed_tmp == 1
    assert held_run.is_dir() and not dead_run.exists()


# ---------------------------------------------------------------------------------------------- size target
def test_gc_max_size_below_what_kept_builds_hold_says_so(tmp_path):
    cache = Cache(tmp_path / "c")
    kept = _blob(cache, tmp_path, b"k" * 3000)
    free = _blob(cache, tmp_path, b"f" * 5000)
    _record(cache, K1, {"model": kept})
    _record(cache, K2, {"model": free})
    _register(cache, tmp_path, "b-kept", {"q": (K1, {"model": kept})})
    lock_size = manage.blob_size(cache, cache.find_build("b-kept")["lock"])
    res = manage.gc(cache, max_bytes=1000)
    assert res.target_bytes == 1000 and res.missed_target
    assert res.remaining_bytes == 3000 + lock_size, "the kept model and the kept lockfile remain"
    assert cache.lookup(K1) is not None and not cache.blobs.has(free)
    res = manage.gc(cache, max_bytes=1 << 20)
    assert not res.missed_target and res.removed_records == 0


def test_cli_gc_prints_when_it_could_not_shrink(tmp_path):
    cache = Cache(tmp_path / "c")
    kept = _blob(cache, tmp_path, b"k" * 3 * 2**20)
    _record(cache, K1, {"model": kept})
    _register(cache, tmp_path, "b-kept", {"q": (K1, {"model": kept})})
    proc = run_cli("cache", "gc", "--max-size", "1MB", cache=cache.root, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())  # the console wraps long lines
    assert "could not shrink to 1.0 MB: 3.0 MB remain" in said and "(use --include-kept)" in said, said
    proc = run_cli("cache", "gc", "--max-size", "1MB", "--include-kept", cache=cache.root, cwd=tmp_path)
    assert proc.returncode == 0 and "could not shrink" not in proc.stdout, proc.stdout
    assert cache.lookup(K1) is None


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_gc_during_a_build_does_not_break_it(tmp_path):
    """`cache gc --older-than 0 --max-size 0` while `qcompile build` runs: the build still succeeds."""
    cache_dir = tmp_path / "cache"
    cache = Cache(cache_dir)
    stale = _blob(cache, tmp_path, b"an old build's model")
    _record(cache, K1, {"model": stale})  # what gc may take, so it visibly did something
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    build = subprocess.Popen([sys.executable, "-m", "qcompile", "build", "hydra.run.dir=b", "model.train.epochs=1",
                              "bench.iterations=3", "bench.batch_sizes=[1]"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        # Once the build holds three keys, two finished steps' outputs are inputs that later steps still need.
        # The build is paused there while gc runs, so gc runs mid-build however fast or slow each of them is here
        # (running on, the build could finish before gc has even started).
        paused = False
        while not paused and build.poll() is None and time.monotonic() < deadline:
            live, _ = read_leases(cache_dir / "leases")
            if live and len(live[0].keys) >= 3:
                build.send_signal(signal.SIGSTOP)
                paused = True
            else:
                time.sleep(0.01)
        assert paused and build.poll() is None, "the build never held three keys while running"
        try:
            gc = run_cli("cache", "gc", "--older-than", "0", "--max-size", "0", cache=cache_dir, cwd=tmp_path)
        finally:
            build.send_signal(signal.SIGCONT)
        out, err = build.communicate(timeout=900)
    finally:
        if build.poll() is None:
            build.kill()
    said = " ".join(gc.stdout.split())  # the console wraps long lines
    assert gc.returncode == 0 and "removed 1 records" in said and "1 running builds" in said, said
    assert "could not shrink to 0 B" in said
    assert build.returncode == 0, err[-3000:]
    assert _leases(cache) == [], "the lease is gone once the build ends"
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert all(cache.lookup(s["key"]) is not None for s in report["steps"])
    assert cache.lookup(K1) is None and not cache.blobs.has(stale)


def test_forget_keeps_what_another_running_build_holds(tmp_path):
    """Undoing a rejected build never pulls a record from under a parallel worker that uses it."""
    mine, theirs = Cache(tmp_path / "c"), Cache(tmp_path / "c")
    shared = _blob(mine, tmp_path, b"shared data" * 100)
    own = _blob(mine, tmp_path, b"only mine" * 100)
    _record(mine, K1, {"data": shared})
    _record(mine, K2, {"model": own})
    with theirs.lease() as other, mine.lease():
        other.hold(K1)
        mine.forget([K1, K2])
    assert mine.lookup(K1) is not None and mine.blobs.has(shared), "held by the other build: kept"
    assert mine.lookup(K2) is None and not mine.blobs.has(own), "only this build's: removed with its blob"
