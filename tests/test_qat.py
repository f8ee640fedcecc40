"""quant.kind=qat: torchao's quantization-aware training, end to end on the demo CNN and real digits, its bad
inputs through the CLI, and its two torch helpers (BatchNorm folding, the quantizer's config)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import qcompile

from .conftest import export_tiny_onnx, run_cli
from .test_trust import bad

# The demo CNN trained on scikit-learn's digits (1,497 training samples, 300 held out), fine-tuned with QAT.
QAT = ("quant=qat", "data=digits", "eval.max_accuracy_drop=null", "bench.batch_sizes=[1]", "bench.warmup=1",
       "bench.iterations=5")


@pytest.fixture(scope="module")
def qat_build(tmp_path_factory):
    """The QAT demo built once through the CLI into its own cache: (work dir, cache, report of ``work/first``)."""
    work = tmp_path_factory.mktemp("qat")
    cache = work / "cache"
    proc = run_cli("build", *QAT, "hydra.run.dir=first", cache=cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, cache, json.loads((work / "first" / "report.json").read_text())


def test_qat_variant_is_measured_and_close_to_fp32(qat_build):
    work, _, rep = qat_build
    m = rep["metrics"]
    assert rep["variants"] == ["fp32", "int8"] and rep["status"] == "ok"
    scheme = rep["schemes"]["int8"]
    assert scheme["kind"] == "qat" and scheme["step"] == "quantize.torchao_qat"
    assert (scheme["epochs"], scheme["lr"], scheme["per_channel"]) == (2, 1e-4, True)
    assert scheme["activation_type"] in ("host", "uint8", "int8")
    assert rep["target"]["activation_type"] in ("uint8", "int8"), "resolved on this machine"
    assert m["fp32"]["accuracy"] > 0.9, "the demo CNN must really learn the digits"
    # Fine-tuning may move the model, but not far: int8 top-1 within 3 points and 90% agreement with FP32.
    assert m["int8"]["accuracy"] >= m["fp32"]["accuracy"] - 0.03, m
    assert rep["fidelity"]["int8"]["top1_agreement"] >= 0.9, rep["fidelity"]
    assert m["int8"]["size_bytes"] < m["fp32"]["size_bytes"] / 3, "int8 weights stored as int8"
    qat = next(s for s in rep["steps"] if s["name"] == "qat")
    assert qat["kind"] == "quantize.torchao_qat" and qat["status"] == "ran"


def test_qat_model_is_qdq_with_the_fp32_names_and_a_dynamic_batch(qat_build):
    import onnx
    import onnxruntime as ort

    work, _, _ = qat_build
    art = work / "first" / "artifacts"
    int8, fp32 = onnx.load(str(art / "model.int8.onnx")), onnx.load(str(art / "model.fp32.onnx"))
    ops = [n.op_type for n in int8.graph.node]
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(ops)
    assert "BatchNormalization" not in ops
    names = lambda m: ([i.name for i in m.graph.input], [o.name for o in m.graph.output])  # noqa: E731
    assert names(int8) == names(fp32) == (["input"], ["logits"])
    assert not (art / "model.int8.onnx.data").exists(), "one self-contained file"
    assert int8.graph.input[0].type.tensor_type.shape.dim[0].dim_param, "batch axis is dynamic"
    # Per-channel weights: a DequantizeLinear with one scale per output channel.
    init = {i.name: i for i in int8.graph.initializer}
    per_channel = [n for n in int8.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in init
                   and len(init[n.input[1]].dims) == 1 and init[n.input[1]].dims[0] > 1]
    assert per_channel, "per-channel weight scales"
    out = ort.InferenceSession(str(art / "model.int8.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": np.zeros((5, 1, 28, 28), np.float32)})[0]
    assert out.shape == (5, 10) and np.isfinite(out).all()


def test_qat_rebuild_is_fully_cached_without_torch(qat_build):
    work, cache, first = qat_build
    proc = run_cli("build", *QAT, "hydra.run.dir=second", cache=cache, cwd=work,
                   extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "import time:" in line}
    assert not imported & {"torch", "torchao", "onnxruntime", "onnx", "numpy"}
    rep = json.loads((work / "second" / "report.json").read_text())
    assert {s["status"] for s in rep["steps"]} == {"cached"}
    assert rep["build_id"] == first["build_id"]


def test_qat_for_tensorrt_gives_symmetric_int8_that_passes_the_qdq_check(qat_build):
    """TensorRT's defaults ask symmetric int8 activations: the QAT model must pass the strict Q/DQ check (zero
    points 0, int8), or the build exits 2."""
    work, cache, _ = qat_build
    proc = run_cli("build", *QAT, "target=tensorrt", "target.engine=false", "target.strict=true",
                   "hydra.run.dir=trt", cache=cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((work / "trt" / "report.json").read_text())
    assert rep["schemes"]["int8"]["activation_type"] == "int8"
    assert rep["schemes"]["int8"]["activation_symmetric"] is True
    status = {s["name"]: s["status"] for s in rep["steps"]}
    assert status["train"] == status["export"] == "cached" and status["qat"] == status["trt_check.int8"] == "ran"
    assert json.loads((work / "trt" / "artifacts" / "trt_check.int8.json").read_text()) == []


# ---------------------------------------------------------------- bad input
@pytest.fixture
def onnx_recipes(tmp_path):
    """A recipe folder with an ONNX-file model (no torch module) and npz data."""
    d = tmp_path / "recipes"
    (d / "model").mkdir(parents=True)
    (d / "data").mkdir()
    export_tiny_onnx(tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", x=np.zeros((20, 1, 28, 28), np.float32))
    (d / "model" / "mine.yaml").write_text(f"kind: onnx\npath: {tmp_path}/model.onnx\ninput_shape: [1, 28, 28]\n")
    (d / "data" / "mine.yaml").write_text(f"kind: npz\npath: {tmp_path}/data.npz\ny_key: null\neval_samples: 4\n")
    (d / "mine.yaml").write_text("defaults: [base, {model: mine}, {data: mine}, {quant: qat}, {target: ort_cpu}, "
                                 "_self_]\nname: mine\neval: {max_accuracy_drop: null}\n")
    return ["--config-dir", str(d), "--config-name", "mine"]


def test_an_onnx_model_has_no_torch_module_to_train(onnx_recipes, cache_dir, tmp_path):
    proc = run_cli("build", *onnx_recipes, cache=cache_dir, cwd=tmp_path)
    bad(proc, "quant.kind=qat needs a torch model; model.kind=onnx provides none", cache=cache_dir)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_data_without_a_training_split(cache_dir, tmp_path):
    # resnet18 (random init) needs no training split itself, so the quant section is the one that asks.
    proc = run_cli("build", "quant=qat", "model=resnet18", "data=synthetic", cache=cache_dir, cwd=tmp_path)
    bad(proc, "quant.kind=qat needs a training split (samples.train); data.kind=synthetic provides none",
        cache=cache_dir)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_uint8_activations_are_refused_for_tensorrt(cache_dir, tmp_path):
    proc = run_cli("build", "quant=qat", "data=digits", "target=tensorrt", "target.engine=false",
                   "quant.activation_type=uint8", cache=cache_dir, cwd=tmp_path)
    bad(proc, "quant.activation_type=uint8", "target.kind=tensorrt", cache=cache_dir)


def test_missing_torchao_names_the_extra(cache_dir, tmp_path):
    """torchao is the ``qat`` extra: without it the build exits 2 at plan time naming the pip command."""
    import subprocess

    assert qcompile.load_recipe("demo", ["quant=qat"]).quant.requires == {"torchao": "qat", "torch": "torch"}
    code = ("import sys; sys.modules['torchao'] = None  # as if not installed: find_spec answers None\n"
            "from qcompile.cli import main; sys.exit(main(['build', 'quant=qat', 'data=digits']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "QCOMPILE_CACHE_DIR": str(cache_dir)})
    bad(proc, "quant.kind=qat needs torchao: pip install 'qcompile[qat]'", cache=cache_dir)


# ---------------------------------------------------------------- the torch helpers
def test_folding_batch_norms_keeps_the_eval_outputs():
    import torch

    from qcompile.models.mnist_cnn import MnistCnn
    from qcompile.steps.qat import fold_batch_norms

    torch.manual_seed(0)
    model = MnistCnn()
    for bn in (model.features[1], model.features[5]):  # statistics other than the identity
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        before = model.eval()(x)
        assert fold_batch_norms(model, (x[:2],)) == 2
        after = model.eval()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("activation, per_channel, reduce_range, act, weight", [
    ("uint8", True, False, ("uint8", 0, 255, "per_tensor_affine"), "per_channel_symmetric"),
    ("uint8", True, True, ("uint8", 0, 127, "per_tensor_affine"), "per_channel_symmetric"),
    ("int8", True, False, ("int8", -128, 127, "per_tensor_symmetric"), "per_channel_symmetric"),
    ("int8", False, False, ("int8", -128, 127, "per_tensor_symmetric"), "per_tensor_symmetric"),
])
def test_quantizer_config(activation, per_channel, reduce_range, act, weight):
    import torch

    from qcompile.steps.qat import quantizer

    config = quantizer(activation, per_channel, reduce_range).global_config
    a = config.input_activation
    assert config.is_qat and config.output_activation == a
    assert (str(a.dtype).split(".")[-1], a.quant_min, a.quant_max, str(a.qscheme).split(".")[-1]) == act
    assert str(config.weight.qscheme).split(".")[-1] == weight and config.weight.dtype == torch.int8
