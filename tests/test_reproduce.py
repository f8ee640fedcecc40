"""Lockfiles: reproduce a build from its lockfile alone, check out a build by id, refuse bad lockfiles."""

from __future__ import annotations

import json

from .conftest import run_cli
from .test_portable_lock import measured


def test_reproduce_with_empty_cache_gives_identical_digests(demo, tmp_path):
    work, rep = demo
    empty = tmp_path / "empty-cache"
    proc = run_cli("reproduce", str(work / "first" / "qcompile.lock.json"), "--out", str(tmp_path / "again"),
                   cache=empty, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"every deterministic artifact of {rep['build_id']} is identical" in proc.stdout
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert {s["status"] for s in again["steps"]} == {"ran"}, "the emptied cache forced a real rebuild"
    old = {a["path"]: a["sha256"] for a in rep["artifacts"]}
    new = {a["path"]: a["sha256"] for a in again["artifacts"]}
    assert set(new) == set(old)
    differing = {p for p in old if old[p] != new[p]}
    # Timings made again may differ (whether they do is up to the machine); nothing else may.
    timings = measured(json.loads((work / "first" / "qcompile.lock.json").read_text()))
    assert {"artifacts/latency.fp32.json", "artifacts/latency.int8.json"} <= timings
    assert differing <= timings, "only the measurements may differ"
    assert again["build_id"] == rep["build_id"], "timings are not part of the build id: the rebuild keeps it"

    # That cache knows the build by its original id now: checkout brings back artifacts, lockfile and reports.
    co = run_cli("checkout", rep["build_id"], str(tmp_path / "co"), cache=empty, cwd=tmp_path)
    assert co.returncode == 0, co.stderr
    restored, rebuilt = _files(tmp_path / "co"), _files(tmp_path / "again")
    assert {"report.json", "report.md", "qcompile.lock.json"} <= set(restored)
    assert {a["path"] for a in again["artifacts"]} <= set(restored)
    # Byte for byte what the rebuild wrote, but the lockfile, whose project root is now relative to "co".
    assert {p: b for p, b in restored.items() if p != "qcompile.lock.json"} == \
           {p: b for p, b in rebuilt.items() if p in restored and p != "qcompile.lock.json"}
    lock = json.loads((tmp_path / "co" / "qcompile.lock.json").read_text())
    assert lock["build_id"] == rep["build_id"] and lock["nodes"] == \
        json.loads((tmp_path / "again" / "qcompile.lock.json").read_text())["nodes"]


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def test_reproduce_from_cache_is_all_hits(demo, shared_cache, tmp_path):
    work, rep = demo
    proc = run_cli("reproduce", str(work / "first" / "qcompile.lock.json"), "--out", str(tmp_path / "r"),
                   cache=shared_cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "r" / "report.json").read_text())
    assert again["build_id"] == rep["build_id"] and {s["status"] for s in again["steps"]} == {"cached"}


def test_checkout_by_build_id(demo, shared_cache, tmp_path):
    work, rep = demo
    proc = run_cli("checkout", rep["build_id"][:10], str(tmp_path / "co"), cache=shared_cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for a in rep["artifacts"]:
        assert (tmp_path / "co" / a["path"]).read_bytes() == (work / "first" / a["path"]).read_bytes()
    assert json.loads((tmp_path / "co" / "qcompile.lock.json").read_text())["build_id"] == rep["build_id"]
    assert json.loads((tmp_path / "co" / "report.json").read_text())["build_id"] == rep["build_id"]
    assert (tmp_path / "co" / "report.md").read_text().startswith("# qcompile build")
    again = run_cli("checkout", rep["build_id"], str(tmp_path / "co"), cache=shared_cache, cwd=tmp_path)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_checkout_unknown_build(shared_cache, tmp_path):
    proc = run_cli("checkout", "0123456789abcdef", str(tmp_path / "x"), cache=shared_cache, cwd=tmp_path)
    assert proc.returncode == 2 and "no build" in proc.stderr and "Traceback" not in proc.stderr


def test_checkout_of_an_ambiguous_id_prefix_names_both_builds(tmp_path):
    from qcompile.cache import Cache

    cache = Cache(tmp_path / "cache")
    (tmp_path / "lock.json").write_text("{}")
    for build_id in ("abc1230000000000", "abc4560000000000", "fed0000000000000"):
        cache.register_build(build_id, tmp_path / "lock.json")
    proc = run_cli("checkout", "abc", str(tmp_path / "x"), cache=tmp_path / "cache", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "abc1230000000000" in proc.stderr and "abc4560000000000" in proc.stderr and "fed" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_verify_forgets_lost_reports_and_checkout_says_so(tmp_path):
    from qcompile.cache import Cache, manage

    cache = Cache(tmp_path / "cache")
    (tmp_path / "lock.json").write_text(json.dumps({"nodes": {}}))
    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "report.md").write_text("# report")
    cache.register_build("b1", tmp_path / "lock.json")
    cache.register_reports("b1", {"report.json": tmp_path / "report.json", "report.md": tmp_path / "report.md"})
    cache.blobs.remove(cache.find_build("b1")["reports"]["report.md"])
    lost = run_cli("checkout", "b1", str(tmp_path / "a"), cache=tmp_path / "cache", cwd=tmp_path)
    assert lost.returncode == 2 and "report.md of build b1 are no longer in the cache" in lost.stderr, lost.stderr
    _, problems = manage.verify(cache)
    assert any("lost its stored reports" in p for p in problems) and "reports" not in cache.find_build("b1")
    assert run_cli("checkout", "b1", str(tmp_path / "b"), cache=tmp_path / "cache", cwd=tmp_path).returncode == 0


def test_corrupt_and_unknown_lockfiles_are_bad_input(demo, tmp_path):
    work, _ = demo
    lock = json.loads((work / "first" / "qcompile.lock.json").read_text())
    (tmp_path / "cut.json").write_text((work / "first" / "qcompile.lock.json").read_text()[:200])
    (tmp_path / "future.json").write_text(json.dumps({**lock, "lock_version": 99}))
    (tmp_path / "schema.json").write_text(json.dumps({**lock, "schema_version": 99}))
    for name, fragment in (("cut.json", "not a readable lockfile"), ("future.json", "version 99"),
                           ("schema.json", "schema version 99"), ("absent.json", "not found")):
        proc = run_cli("reproduce", str(tmp_path / name), cache=tmp_path / "c", cwd=tmp_path)
        assert proc.returncode == 2, (name, proc.stderr)
        assert fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_lockfile_from_other_library_versions_says_so(demo, shared_cache, tmp_path):
    from qcompile.builds.lockfile import content_digest

    work, _ = demo
    lock = json.loads((work / "first" / "qcompile.lock.json").read_text())
    lock["env"]["onnxruntime"] = "1.0.0"
    for node in lock["nodes"].values():
        if "onnxruntime" in node["env"]:
            node["env"]["onnxruntime"] = "1.0.0"
    lock["digest"] = content_digest(lock)  # as that environment would have written it
    (tmp_path / "old.json").write_text(json.dumps(lock))
    proc = run_cli("reproduce", str(tmp_path / "old.json"), "--out", str(tmp_path / "r"), cache=shared_cache,
                   cwd=tmp_path)
    assert "onnxruntime: 1.0.0 (lockfile) ->" in proc.stderr, proc.stderr[-2000:]
    # Each step's environment is compared too: only the steps that use onnxruntime name it.
    rows = {ln.split("│")[1].strip(): ln for ln in proc.stdout.splitlines() if ln.count("│") > 3}
    assert "onnxruntime" in rows["quantize"] and "onnxruntime" not in rows["train"], proc.stdout
