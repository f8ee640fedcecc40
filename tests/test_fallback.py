"""The sensitivity table, ``quant.exclude`` by the names model.fp32.onnx shows, and the accuracy-aware fallback
search: every trial an ordinary cached plan, a ledger written as trials end, resumable, replayable.

A small real ONNX convnet (random weights, labels = its own FP32 predictions, so FP32 scores 100%) quantized with
a clipping calibration (percentile 60) fails a 5-point gate; keeping its most sensitive layers in float passes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from .conftest import cache_entries, run_cli


def convnet(path, seed=0, unnamed=False):
    """Conv-Relu x3 (1->8->8->8 channels) -> MaxPool -> Flatten -> Gemm(288 -> 10), named as an exporter
    would (or not at all)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes, x = [], [], "input"
    for i, cin in enumerate((1, 8, 8)):
        inits += [numpy_helper.from_array((rng.standard_normal((8, cin, 3, 3)) / 3).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array((rng.standard_normal(8) / 10).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"/conv{i}/Conv", pads=[1] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"/relu{i}/Relu")]
        x = f"r{i}"
    inits += [numpy_helper.from_array((rng.standard_normal((10, 288)) / 10).astype(np.float32), "fw"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fb")]
    nodes += [helper.make_node("MaxPool", [x], ["pool"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Flatten", ["pool"], ["flat"], name="/flatten/Flatten"),
              helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], name="/head/fc/Gemm", transB=1)]
    if unnamed:
        for n in nodes:
            n.name = ""
    graph = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               ["batch", 1, 12, 12])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture
def recipe(tmp_path):
    """CLI arguments of the convnet with 600 samples labelled by its own FP32 predictions (those with a clear
    margin between the top two logits), static INT8 with a clipping calibration and a 5-point gate, fallback on."""
    import onnxruntime as ort

    convnet(tmp_path / "model.onnx")
    x = np.random.default_rng(1).standard_normal((3000, 1, 12, 12)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x})[0]
    top2 = np.sort(logits, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > np.median(top2[:, 1] - top2[:, 0])
    np.savez(tmp_path / "data.npz", x=x[clear][:600], y=logits[clear][:600].argmax(1))
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "convnet.yaml").write_text(
        "defaults: [base, {model: onnx}, {data: npz}, {quant: int8_static}, {target: ort_cpu}, _self_]\n"
        f"name: convnet\nmodel: {{path: {tmp_path}/model.onnx, input_shape: [1, 12, 12]}}\n"
        f"data: {{path: {tmp_path}/data.npz, eval_samples: 400}}\n"
        "quant: {calibration: {samples: 64, method: percentile, percentile: 99}, fallback: {enabled: true}}\n"
        "eval: {max_accuracy_drop: 0.05}\nbench: {batch_sizes: [1], warmup: 1, iterations: 5, max_seconds: 0.5}\n")
    return ["--config-dir", str(d), "--config-name", "convnet"]


def _report(folder):
    return json.loads((folder / "report.json").read_text())


def _ledger(folder):
    return [json.loads(line) for line in (folder / "search.jsonl").read_text().splitlines()]


def test_fallback_finds_float_nodes_that_pass_and_a_rerun_replays_every_trial(recipe, cache_dir, tmp_path):
    first = run_cli("build", *recipe, "hydra.run.dir=a", cache=cache_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    report, ledger = _report(tmp_path / "a"), _ledger(tmp_path / "a")
    search = report["search"]
    assert search["passed"] and search["strategy"] == "bisect"
    assert ledger == search["trials"], "the ledger holds every trial the report shows"
    assert not ledger[0]["passed"] and ledger[0]["float_nodes"] == [], "the recipe as written fails its gate"
    chosen = ledger[search["chosen"]]
    assert chosen["passed"] and chosen["float_nodes"]
    assert all(len(t["float_nodes"]) >= len(chosen["float_nodes"]) for t in ledger if t["passed"]), "the fewest"
    # Rows of the sensitivity table are whole: a Conv goes to float with the Relu ORT fused into its output.
    rows = search["ranking"]
    assert len(rows) == 4 and {r["op_type"] for r in rows} >= {"Conv+Relu", "Gemm"}
    local = [r["local_sqnr_db"] for r in rows]
    assert local == sorted(local), "ranked by local SQNR, worst first"
    assert set(chosen["float_nodes"]) <= {n for r in rows for n in r["nodes"]}
    # The built recipe is the winning trial's: its lockfile names the nodes kept in float.
    lock = json.loads((tmp_path / "a" / "qcompile.lock.json").read_text())
    assert lock["recipe"]["quant"]["exclude"]["names"] == chosen["float_nodes"]
    assert report["accuracy_drop"]["int8"] <= 0.05 and report["gates"] == []
    md = (tmp_path / "a" / "report.md").read_text()
    assert "## Sensitivity" in md and "## Fallback search" in md and "search.png" in md
    assert (tmp_path / "a" / "search.png").stat().st_size > 1000

    again = run_cli("build", *recipe, "hydra.run.dir=b", cache=cache_dir, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    replay = _ledger(tmp_path / "b")
    assert [t["status"] for t in replay] == ["cached"] * len(ledger), "every trial is a cache hit"
    assert [(t["float_nodes"], t["value"], t["passed"]) for t in replay] == \
           [(t["float_nodes"], t["value"], t["passed"]) for t in ledger]
    assert {s["status"] for s in _report(tmp_path / "b")["steps"]} == {"cached"}
    assert _report(tmp_path / "b")["build_id"] == report["build_id"]

    # Replayed from the lockfile on an empty cache: the same digests, and no search.
    from qcompile.builds.reproduce import reproduce
    from qcompile.cache import Cache
    from qcompile.run.progress import Reporter

    result = reproduce(tmp_path / "a" / "qcompile.lock.json", tmp_path / "c", Cache(tmp_path / "empty"),
                       Reporter(quiet=True))
    assert result.identical, result.first_difference  # measurements are compared as "expected" to differ
    assert not (tmp_path / "c" / "search.jsonl").exists()


def test_greedy_adds_one_row_a_trial_and_bisect_never_keeps_fewer(recipe, cache_dir, tmp_path):
    greedy = run_cli("build", *recipe, "quant.fallback.strategy=greedy", "quant.fallback.rank=sensitivity",
                     "hydra.run.dir=g", cache=cache_dir, cwd=tmp_path)
    assert greedy.returncode == 0, greedy.stderr[-3000:]
    ledger = _ledger(tmp_path / "g")
    counts = [len(t["float_nodes"]) for t in ledger]
    assert counts == sorted(counts) and [t["passed"] for t in ledger] == [False] * (len(ledger) - 1) + [True]
    bisect = run_cli("build", *recipe, "quant.fallback.rank=sensitivity", "hydra.run.dir=b", cache=cache_dir,
                     cwd=tmp_path)
    assert bisect.returncode == 0
    chosen = _report(tmp_path / "b")["search"]
    # Greedy tries every count in order, so it finds the fewest; bisection, fewer trials, never fewer nodes.
    assert len(chosen["trials"][chosen["chosen"]]["float_nodes"]) >= len(ledger[-1]["float_nodes"])
    assert chosen["trials"][0]["status"] == "cached", "trials bisection shares with greedy are cache hits"


def test_measured_rank_tries_each_row_alone_first(recipe, cache_dir, tmp_path):
    proc = run_cli("build", *recipe, "hydra.run.dir=m", cache=cache_dir, cwd=tmp_path)  # rank=measured: the default
    assert proc.returncode == 0, proc.stderr[-3000:]
    search = _report(tmp_path / "m")["search"]
    phases = [t["phase"] for t in search["trials"]]
    rows = search["ranking"]
    assert search["rank"] == "measured" and phases[0] == "cumulative" and phases[1] == "alone"
    alone = [t for t in search["trials"] if t["phase"] == "alone"]
    assert [t["float_nodes"] for t in alone] == [r["nodes"] for r in rows[:len(alone)]], "in the table's order"
    assert phases[1:] == sorted(phases[1:], key=["alone", "cumulative"].index), "rows alone, then the search"
    if any(t["passed"] for t in alone):
        assert alone[-1]["passed"] and search["trials"][search["chosen"]] == alone[-1], "stops at the first pass"
    else:
        assert len(alone) == len(rows) and search["trials"][search["chosen"]]["passed"]


def test_no_trial_passes_exit_3_naming_the_best(recipe, cache_dir, tmp_path):
    proc = run_cli("build", *recipe, "quant.fallback.max_float_nodes=1", "hydra.run.dir=n", cache=cache_dir,
                   cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "no trial passed within quant.fallback.max_trials=48 and max_float_nodes=1" in proc.stderr
    assert "Traceback" not in proc.stderr
    search = _report(tmp_path / "n")["search"]
    assert not search["passed"] and f"trial {search['chosen']}" in proc.stderr


def test_sigint_mid_search_then_the_same_command_resumes_from_cache(recipe, cache_dir, tmp_path):
    import os

    args = [*recipe, "quant.fallback.strategy=greedy"]
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(cache_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "qcompile", "build", *args, "hydra.run.dir=i"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger = tmp_path / "i" / "search.jsonl"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline and not (ledger.exists() and ledger.read_text()):
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)  # hold it still while we read how far it got
    assert proc.poll() is None, "the build ended before it could be interrupted"
    finished = len(ledger.read_text().splitlines())
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "i").exists(), "an interrupted build leaves no folder behind"

    resumed = run_cli("build", *args, "hydra.run.dir=j", cache=cache_dir, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = _ledger(tmp_path / "j")
    assert len(trials) > finished, "the search was interrupted in its middle"
    assert [t["status"] for t in trials[:finished]] == ["cached"] * finished, "finished trials are cache hits"


def test_exclude_by_a_name_read_from_model_fp32_onnx(tmp_path, cache_dir, recipe):
    """Names, patterns and op types as model.fp32.onnx shows them; an unnamed model gets names there."""
    import onnx

    convnet(tmp_path / "model.onnx", unnamed=True)
    plain = run_cli("build", *recipe, "quant.fallback.enabled=false", "eval.max_accuracy_drop=null",
                    "hydra.run.dir=p", cache=cache_dir, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    names = {n.name: n.op_type for n in onnx.load(str(tmp_path / "p" / "artifacts" / "model.fp32.onnx")).graph.node}
    assert "" not in names and len(names) == 9
    listed = run_cli("plan", "--nodes", *recipe, cache=cache_dir, cwd=tmp_path)
    assert listed.returncode == 0 and all(name in listed.stdout for name in names), "plan --nodes shows the same"
    conv = next(n for n, op in names.items() if op == "Conv")
    overrides = (f"quant.exclude.names=[{conv}]", "quant.exclude.names=[Conv_*]", "quant.exclude.op_types=[Gemm]")
    for i, override in enumerate(overrides):
        proc = run_cli("build", *recipe, "quant.fallback.enabled=false", "eval.max_accuracy_drop=null", override,
                       f"hydra.run.dir=x{i}", cache=cache_dir, cwd=tmp_path)
        assert proc.returncode == 0, (override, proc.stderr[-3000:])
        q = onnx.load(str(tmp_path / f"x{i}" / "artifacts" / "model.int8.onnx"))
        floats = {n.name for n in q.graph.node if n.op_type in ("Conv", "Gemm")}
        want = ({conv} if "names=[Conv_" not in override else {n for n, op in names.items() if op == "Conv"}) \
            if "names" in override else {n for n, op in names.items() if op == "Gemm"}
        assert want <= floats, (override, floats)


@pytest.mark.parametrize("override, key, fragment", [
    ("quant.exclude.names=[/conv9/Conv]", "quant.exclude.names", "did you mean /conv2/Conv"),
    ("quant.exclude.names=[/nothing/*]", "quant.exclude.names", "matches no node"),
    ("quant.exclude.op_types=[Softmax]", "quant.exclude.op_types", "its op types: Conv, Flatten"),
    ("quant.fallback.max_trials=0", "quant.fallback.max_trials", "greater than 0"),
])
def test_bad_exclusions_and_fallback_limits_are_refused_before_anything_runs(recipe, cache_dir, tmp_path,
                                                                              override, key, fragment):
    proc = run_cli("build", *recipe, override, cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and key in proc.stderr and fragment in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and cache_entries(cache_dir) == []


def test_fallback_on_dynamic_quantization_is_refused(cache_dir, tmp_path):
    proc = run_cli("build", "quant=int8_dynamic", "quant.fallback.enabled=true", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "quant.fallback: unknown key; quant.kind=dynamic takes" in proc.stderr
