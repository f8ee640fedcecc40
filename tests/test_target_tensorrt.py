"""target=tensorrt: TensorRT's quantization defaults, the Q/DQ checker, engine=false builds, plan-time refusal
without TensorRT, and the engine build sequence against a stand-in ``tensorrt`` module that records the calls."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import cache_entries, run_cli

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def tiny_conv_onnx(path: Path, seed: int = 0) -> None:
    """A small real classifier: Conv(1->4, 3x3) -> Relu -> MaxPool -> Flatten -> Gemm(676 -> 10)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "conv_b"),
             numpy_helper.from_array(rng.standard_normal((10, 676)).astype(np.float32) * 0.05, "fc_w"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("MaxPool", ["relu"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "tiny_conv",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def tiny_project(tmp_path: Path) -> Path:
    """A recipe folder building the tiny conv model on labelled npz samples, timed briefly."""
    import onnxruntime as ort

    tiny_conv_onnx(tmp_path / "model.onnx")
    x = np.random.default_rng(1).random((48, 1, 28, 28)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    np.savez(tmp_path / "data.npz", x=x, y=sess.run(None, {"input": x})[0].argmax(1))
    d = tmp_path / "recipes"
    (d / "model").mkdir(parents=True)
    (d / "data").mkdir()
    (d / "model" / "tiny.yaml").write_text(
        f"kind: onnx\npath: {tmp_path}/model.onnx\ninput_shape: [1, 28, 28]\n"
        "normalize: {scale: 0.00392156862745098, mean: [0.5], std: [0.25]}\n")
    (d / "data" / "tiny.yaml").write_text(f"kind: npz\npath: {tmp_path}/data.npz\neval_samples: 16\n")
    (d / "tiny.yaml").write_text(
        "defaults: [base, {model: tiny}, {data: tiny}, {quant: int8_static}, {target: ort_cpu}, _self_]\n"
        "name: tiny\nquant: {calibration: {samples: 16, batch_size: 8}}\n"
        "eval: {max_accuracy_drop: null, batch_size: 16}\n"
        "bench: {batch_sizes: [1], warmup: 1, iterations: 6, max_seconds: 0.2}\n")
    return d


def build(tmp_path: Path, cache: Path, *overrides: str, out: str = "out"):
    """Build the tiny project with ``overrides`` into ``tmp_path/out``."""
    recipes = tmp_path / "recipes" if (tmp_path / "recipes").exists() else tiny_project(tmp_path)
    return run_cli("build", "--config-dir", str(recipes), "--config-name", "tiny", f"hydra.run.dir={out}",
                   *overrides, cache=cache, cwd=tmp_path)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
@pytest.mark.parametrize("verb", ["plan", "build"])
def test_engine_target_without_tensorrt_exits_2_with_install_hint(verb, cache_dir, tmp_path):
    proc = run_cli(verb, "target=tensorrt", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for fragment in ("target.engine", "TensorRT is not installed", "pip install 'qcompile[tensorrt]'",
                     "target.engine=false"):
        assert fragment in proc.stderr, proc.stderr
    assert cache_entries(cache_dir) == []


def test_checker_passes_tensorrt_qdq_and_names_ort_cpu_nodes(cache_dir, tmp_path):
    import onnx

    from qcompile.steps.trt_check import check_qdq, summary

    proc = build(tmp_path, cache_dir, "target=tensorrt_qdq", out="trt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    art = tmp_path / "trt" / "artifacts"
    assert json.loads((art / "trt_check.int8.json").read_text()) == []
    model = onnx.load(str(art / "model.int8.onnx"))
    assert check_qdq(model) == []
    zps = [t for t in model.graph.initializer if t.name.endswith("zero_point")]
    assert zps and all(not np.any(onnx.numpy_helper.to_array(z)) for z in zps)
    assert not [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32], "bias stays float"
    with zipfile.ZipFile(art / "bundle.zip") as z:
        manifest = json.loads(z.read("manifest.json"))
        cmd = z.read("trtexec.txt").decode()
        assert manifest["model"]["file"] == "model.onnx" and "model.onnx" in z.namelist()
    line = cmd.splitlines()[-1]
    assert line.startswith("trtexec --onnx=model.onnx") and "--minShapes=input:1x1x28x28" in line
    assert "--maxShapes=input:32x1x28x28" in line and "--stronglyTyped" in line
    assert not any(flag in line for flag in ("--int8", "--batch", "--calib"))
    report = json.loads((tmp_path / "trt" / "report.json").read_text())
    assert "not TensorRT's" in report["measured_on"]

    # The x86 choice whatever this host is (target.isa=auto would pick int8 activations on an ARM host).
    proc = build(tmp_path, cache_dir, "target=ort_cpu", "target.isa=avx2", out="cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    problems = check_qdq(onnx.load(str(tmp_path / "cpu" / "artifacts" / "model.int8.onnx")))
    named = {p["node"] for p in problems}
    assert {"input_QuantizeLinear", "relu_QuantizeLinear"} <= named, problems  # uint8, zero point != 0
    assert any("int32 DequantizeLinear" in p["rule"] for p in problems)  # quantized bias
    assert "relu_QuantizeLinear" in summary(problems)


def test_checker_warns_by_default_and_strict_refuses_listing_nodes(cache_dir, tmp_path):
    # uint8 activations (ORT CPU's x86 choice) through the TensorRT target: a warning naming the nodes...
    proc = build(tmp_path, tmp_path / "other-cache", "target=tensorrt_qdq", "quant.activation_type=uint8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = " ".join(json.loads((tmp_path / "out" / "report.json").read_text())["notes"])
    assert "trt_check.int8" in notes and "input_QuantizeLinear" in notes and "TensorRT's Q/DQ rules" in notes
    # ...and with target.strict=true bad input: exit 2, nothing cached.
    proc = build(tmp_path, cache_dir, "target=tensorrt_qdq", "target.strict=true", "quant.activation_type=uint8",
                 out="strict")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "target.strict" in proc.stderr and "input_QuantizeLinear" in proc.stderr
    assert "uint8 quantization" in proc.stderr
    assert cache_entries(cache_dir) == [], "a rejected build leaves nothing in the cache"


def test_option_the_target_does_not_take(cache_dir, tmp_path):
    proc = run_cli("plan", "target=ort_mobile", "+target.strict=true", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "target.strict" in proc.stderr and "Traceback" not in proc.stderr


def test_checker_rules_on_handmade_graphs():
    """Per-channel activations, a non-constant scale and a QOperator op are each named."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from qcompile.steps.trt_check import check_qdq

    f = numpy_helper.from_array
    inits = [f(np.array([0.1, 0.2], np.float32), "s2"), f(np.zeros(2, np.int8), "z2"),
             f(np.array(0.1, np.float32), "s"), f(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s2", "z2"], ["q"], name="per_channel_act", axis=1),
             helper.make_node("DequantizeLinear", ["q", "s2", "z2"], ["dq"], name="dq_act", axis=1),
             helper.make_node("QuantizeLinear", ["dq", "dyn_scale", "z"], ["q2"], name="dynamic_scale"),
             helper.make_node("ConvInteger", ["q2", "q2"], ["y"], name="qop")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2]),
                                       helper.make_tensor_value_info("dyn_scale", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)
    found = {p["node"]: p["rule"] for p in check_qdq(helper.make_model(g))}
    assert "per-tensor" in found["per_channel_act"] and "per-tensor" in found["dq_act"]
    assert "not a constant" in found["dynamic_scale"]
    assert "QOperator" in found["qop"]
    assert onnx  # the checker needs onnx and numpy only


class _Named:
    """One recorded TensorRT object (builder, parser, config...): every call and attribute set is logged."""

    def __init__(self, name: str, rec: _Recorder):
        self.__dict__.update(_n=name, _r=rec)

    def __getattr__(self, attr):
        def call(*args, **kwargs):
            self._r.calls.append((f"{self._n}.{attr}", args, kwargs))
            return self._r.result(attr)
        return call

    def __setattr__(self, attr, value):
        self._r.calls.append((f"{self._n}.{attr}=", (value,), {}))


class _Recorder:
    """A stand-in for the ``tensorrt`` module (10/11 API names as in FACTS.md) that records every call."""

    OBJECTS = {"create_builder_config": "config", "create_optimization_profile": "profile",
               "create_timing_cache": "cache", "get_timing_cache": "cache"}

    def __init__(self):
        self.calls: list[tuple] = []
        self.net = types.SimpleNamespace(num_inputs=1, get_input=lambda i: types.SimpleNamespace(
            name="input", shape=(-1, 1, 28, 28)))

    def module(self) -> types.ModuleType:
        calls = self.calls
        m = types.ModuleType("tensorrt")
        m.__version__ = "10.99.0"
        m.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, lvl: calls.append(("Logger", (lvl,), {}))})
        m.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        m.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        m.Builder = lambda logger: (calls.append(("Builder", (), {})), _Named("builder", self))[1]
        m.OnnxParser = lambda net, logger: (calls.append(("OnnxParser", (net,), {})), _Named("parser", self))[1]
        return m

    def result(self, attr):
        if attr in self.OBJECTS:
            return _Named(self.OBJECTS[attr], self)
        return {"create_network": self.net, "parse_from_file": True, "build_serialized_network": b"ENGINE-BYTES",
                "serialize": b"TIMING-CACHE"}.get(attr)


def test_engine_build_sequence_with_a_recording_tensorrt(tmp_path, monkeypatch):
    """The TensorRT 10/11 build sequence, checked against a stand-in module (no TensorRT or GPU here)."""
    from qcompile.steps import trt_engine

    rec = _Recorder()
    fake = rec.module()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_engine, "gpu_compute_capability", lambda: "9.0")
    tiny_conv_onnx(tmp_path / "model.onnx")
    (tmp_path / "prev.cache").write_bytes(b"PREVIOUS")
    from qcompile.kinds.targets.tensorrt import EngineParams, TensorRTTarget

    target = TensorRTTarget(kind="tensorrt", profile_batch=(1, 4, 16), workspace_mb=256, optimization_level=3)
    params = EngineParams(target=target, inputs=[["input", 1, 28, 28]])
    from qcompile.steps.base import StepContext

    ctx = StepContext(inputs={"model": tmp_path / "model.onnx", "timing_cache": tmp_path / "prev.cache"},
                      workdir=tmp_path, outputs=dict(trt_engine.TrtEngineStep.outputs))
    step = trt_engine.TrtEngineStep()
    assert step.host_facts(params) == {"tensorrt": "10.99.0", "compute_capability": "9.0"}
    result = step.run(ctx, params)
    assert (tmp_path / "model.engine").read_bytes() == b"ENGINE-BYTES"
    assert (tmp_path / "timing.cache").read_bytes() == b"TIMING-CACHE"
    assert result["timing_cache_in"] == len(b"PREVIOUS")
    names = [c[0] for c in rec.calls]
    expected = ["Builder", "builder.create_network", "OnnxParser", "parser.parse_from_file",
                "builder.create_builder_config", "config.set_memory_pool_limit", "config.builder_optimization_level=",
                "builder.create_optimization_profile", "profile.set_shape", "config.add_optimization_profile",
                "config.create_timing_cache", "config.set_timing_cache", "builder.build_serialized_network",
                "config.get_timing_cache", "cache.serialize"]
    assert [n for n in names if n in expected] == expected
    call = {c[0]: c for c in rec.calls}
    assert call["builder.create_network"][1] == (1 << 1,)  # 1 << int(STRONGLY_TYPED), read from the module
    assert call["parser.parse_from_file"][1] == (str(tmp_path / "model.onnx"),)
    assert call["config.set_memory_pool_limit"][1] == ("WORKSPACE", 256 << 20)
    assert call["profile.set_shape"][1] == ("input", (1, 1, 28, 28), (4, 1, 28, 28), (16, 1, 28, 28))
    assert call["config.create_timing_cache"][1] == (b"PREVIOUS",)
    assert call["config.set_timing_cache"][2] == {"ignore_mismatch": False}


def test_engine_step_without_gpu_is_bad_input(tmp_path, monkeypatch):
    from qcompile.errors import BadInput
    from qcompile.steps import trt_engine

    monkeypatch.setitem(sys.modules, "tensorrt", _Recorder().module())
    monkeypatch.setattr(trt_engine, "gpu_compute_capability", lambda: None)
    with pytest.raises(BadInput, match="NVIDIA GPU"):
        trt_engine.require_gpu()


def test_engine_plan_with_tensorrt_present(monkeypatch):
    """With TensorRT and a GPU (stand-ins): one engine per variant, the timing cache threaded from one to the next,
    TensorRT's evaluate/benchmark steps, and engine keys holding the TensorRT version and compute capability."""
    import qcompile
    from qcompile.kinds.targets import tensorrt as target
    from qcompile.run.scheduler import key_material
    from qcompile.steps import trt_engine
    from qcompile.steps.base import get_step

    monkeypatch.setitem(sys.modules, "tensorrt", _Recorder().module())
    monkeypatch.setattr(target, "missing_tensorrt", lambda: None)
    monkeypatch.setattr(trt_engine, "gpu_compute_capability", lambda: "8.9")
    plan = qcompile.compile_plan(qcompile.load_recipe("demo", ["target=tensorrt"]))
    engine = plan.node("engine.int8")
    assert engine.inputs["model"].node == "trt_check.int8"
    assert engine.inputs["timing_cache"].node == "engine.fp32"  # fed from the previous engine
    assert "timing_cache" not in plan.node("engine.fp32").inputs
    assert plan.node("engine.int8").publish["timing_cache"] == "timing.cache"
    assert plan.node("evaluate.int8").kind == "evaluate.tensorrt"
    assert plan.node("benchmark.int8").kind == "benchmark.tensorrt"
    assert plan.node("evaluate.int8").inputs["model"].node == "engine.int8"
    package = plan.node("package")
    assert package.params.model_file == "model.engine"
    assert {"model.onnx", "timing.cache"} <= set(package.inputs)
    env = key_material(engine, get_step(engine.kind), {}, None)["env"]
    assert env["tensorrt"] == "10.99.0" and env["compute_capability"] == "8.9"
    q = plan.node("quantize").params
    assert (q.activation_type, q.activation_symmetric, q.quantize_bias) == ("int8", True, False)


def test_tensorrt_without_gpu_is_refused_at_plan_time(monkeypatch):
    import qcompile
    from qcompile.errors import BadInput
    from qcompile.kinds.targets import tensorrt as target

    monkeypatch.setitem(sys.modules, "tensorrt", _Recorder().module())  # TensorRT "installed"...
    monkeypatch.setattr(target.shutil, "which", lambda name: None)  # ...but no nvidia-smi
    monkeypatch.setattr(target, "NVIDIA_GPUS", "/nonexistent/nvidia/gpus")  # ...and no GPU the driver sees
    with pytest.raises(BadInput, match="no NVIDIA GPU found") as e:
        qcompile.compile_plan(qcompile.load_recipe("demo", ["target=tensorrt"]))
    assert e.value.key == "target.engine" and "target.engine=false" in str(e.value)
    qcompile.compile_plan(qcompile.load_recipe("demo", ["target=tensorrt_qdq"]))  # no engine: plans anywhere
