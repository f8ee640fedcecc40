"""quant.kind=int4_weight (onnxruntime MatMulNBits) and quant.kind=fp16, built end to end through the library on a
small MLP over (batch, 8, 64) inputs whose three MatMuls take constant weights, with synthetic data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from .conftest import cache_entries, export_tiny_onnx, run_cli

HIDDEN, SEQ = 64, 8


def mlp(path, gather: bool = False) -> None:
    """x (batch, 8, 64) -> MatMul 64x128 + bias -> Relu -> MatMul 128x64 + bias -> + x -> MatMul 64x32; with
    ``gather`` the input is token ids (batch, 8) looked up in a 500 x 64 embedding table first."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)

    inits = [w("w1", HIDDEN, 128), w("b1", 128), w("w2", 128, HIDDEN), w("b2", HIDDEN), w("w3", HIDDEN, 32)]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="/up/MatMul"),
             helper.make_node("Add", ["h1", "b1"], ["a1"], name="/up/Add"),
             helper.make_node("Relu", ["a1"], ["r1"], name="/act/Relu"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="/down/MatMul"),
             helper.make_node("Add", ["h2", "b2"], ["a2"], name="/down/Add"),
             helper.make_node("Add", ["a2", "x"], ["res"], name="/residual/Add"),
             helper.make_node("MatMul", ["res", "w3"], ["y"], name="/head/MatMul")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SEQ, HIDDEN])
    if gather:
        inits.append(w("table", 500, HIDDEN))
        nodes.insert(0, helper.make_node("Gather", ["table", "ids"], ["x"], name="/embed/Gather"))
        x = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", SEQ])
    graph = helper.make_graph(nodes, "mlp", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                ["batch", SEQ, 32])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def self_attention(path) -> None:
    """x @ x^T: a MatMul whose second input is computed at run time, so no weight to quantize."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["xt"], name="/t/Transpose", perm=[0, 2, 1]),
         helper.make_node("MatMul", ["x", "xt"], ["y"], name="/scores/MatMul")], "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SEQ, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", SEQ, SEQ])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture
def recipes(tmp_path):
    """A config folder with recipe ``mlp`` (int4_weight on the MLP, synthetic data, a short benchmark) and the
    model files; returns a function loading a recipe from it with overrides."""
    import qcompile

    mlp(tmp_path / "mlp.onnx")
    mlp(tmp_path / "embed.onnx", gather=True)
    self_attention(tmp_path / "attention.onnx")
    export_tiny_onnx(tmp_path / "gemm.onnx")
    (tmp_path / "mlp.yaml").write_text(
        "defaults: [base, {model: onnx}, {data: synthetic}, {quant: int4_weight}, {target: ort_cpu}, _self_]\n"
        f"name: mlp\nmodel: {{path: {tmp_path}/mlp.onnx, task: embedding}}\ndata: {{eval_samples: 16}}\n"
        "eval: {max_accuracy_drop: null}\nbench: {batch_sizes: [1], warmup: 1, iterations: 5, max_seconds: 0.2}\n")

    def load(*overrides):
        return qcompile.load_recipe("mlp", list(overrides), config_dir=tmp_path)

    return load


def _build(recipe, out, cache_root):
    from qcompile import Cache, build

    return build(recipe, out, cache=Cache(cache_root))


def _model(result, variant):
    import onnx

    return onnx.load(str(result.out_dir / "artifacts" / f"model.{variant}.onnx"))


def test_int4_replaces_each_constant_matmul_weight_by_4bit_blocks(recipes, tmp_path):
    import onnx

    result = _build(recipes(), tmp_path / "out", tmp_path / "cache")
    model = _model(result, "int4")
    onnx.checker.check_model(model)  # the com.microsoft domain is imported
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulNBits") == 3 and "MatMul" not in ops
    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2}
    assert not floats & {"w1", "w2", "w3"}, "no float copy of a quantized weight is left"
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nbits]
    assert all(a["bits"] == 4 and a["block_size"] == 32 and a["accuracy_level"] == 4 for a in attrs)
    assert all(len(n.input) == 4 for n in nbits), "asymmetric by default: zero points stored"
    report = result.report
    sizes = {v: m["size_bytes"] for v, m in report["metrics"].items()}
    assert sizes["int4"] < sizes["fp32"] / 4, sizes  # 74.9 KB -> 13.5 KB measured
    assert report["fidelity"]["int4"]["cosine_min"] > 0.98, report["fidelity"]  # 0.9929 measured
    assert report["schemes"]["int4"]["algorithm"] == "default" and "gptq" not in report["schemes"]["int4"]
    step = next(s for s in report["steps"] if s["name"] == "quantize")
    assert step["kind"] == "quantize.ort_int4" and not any("optimize" == s["name"] for s in report["steps"]), \
        "int4 quantizes the FP32 model as exported: ORT's pre-processing could fuse MatMul+Add into Gemm"


@pytest.mark.parametrize("overrides", [[], ["quant.algorithm=rtn", "quant.symmetric=true"],
                                       ["quant.algorithm=hqq", "quant.block_size=16"],
                                       ["quant.algorithm=gptq", "quant.gptq.samples=16"], ["quant=fp16"]])
def test_a_rebuild_gives_the_same_bytes(overrides, recipes, tmp_path):
    """Each algorithm (and fp16) run twice on empty caches writes the same model file."""
    from qcompile import Cache, compile_plan
    from qcompile.run.scheduler import execute

    plan = compile_plan(recipes(*overrides))
    part = plan.restricted(["quantize"])
    digests = set()
    for n in range(2):
        outcome = {o.name: o for o in execute(part, Cache(tmp_path / f"cache{n}"))}["quantize"]
        assert outcome.status == "ran"
        digests.add(outcome.outputs["model"])
    assert len(digests) == 1


def test_gptq_calibrates_on_the_data_sections_samples(recipes, tmp_path):
    from qcompile import compile_plan

    recipe = recipes("quant.algorithm=gptq", "quant.gptq.samples=24", "quant.block_size=16")
    plan = compile_plan(recipe)
    assert plan.node("quantize").inputs["data"].node == "data"
    assert plan.node("data").params.calib_samples == 24, "the calibration split is the size GPTQ asked for"
    assert "data" not in compile_plan(recipes()).node("quantize").inputs, "other algorithms take no samples"
    result = _build(recipe, tmp_path / "out", tmp_path / "cache")
    data = next(s for s in result.outcomes if s.name == "data")
    assert data.result["calib"] == 24
    assert [n.op_type for n in _model(result, "int4").graph.node].count("MatMulNBits") == 3
    assert result.report["fidelity"]["int4"]["cosine_min"] > 0.98
    assert result.report["schemes"]["int4"]["gptq"]["samples"] == 24


def test_excluded_and_embedding_nodes(recipes, tmp_path):
    """quant.exclude keeps a MatMul float by its model.fp32.onnx name; op_types=[MatMul, Gather] quantizes an
    embedding table too, the model converted to opset 21 first."""

    kept = _build(recipes("quant.exclude.names=[/head/MatMul]"), tmp_path / "a", tmp_path / "cache")
    ops = [(n.name, n.op_type) for n in _model(kept, "int4").graph.node]
    assert ("/head/MatMul", "MatMul") in ops and [op for _, op in ops].count("MatMulNBits") == 2
    assert next(o for o in kept.outcomes if o.name == "quantize").result["float_nodes"] == 1

    embed = _build(recipes(f"model.path={tmp_path}/embed.onnx", "quant.op_types=[MatMul,Gather]"),
                   tmp_path / "b", tmp_path / "cache")
    model = _model(embed, "int4")
    ops = [n.op_type for n in model.graph.node]
    assert "GatherBlockQuantized" in ops and ops.count("MatMulNBits") == 3 and "Gather" not in ops
    assert {o.domain: o.version for o in model.opset_import}[""] == 21
    assert any("opset 17 to 21" in n for n in embed.report["notes"])
    assert embed.report["metrics"]["int4"]["size_bytes"] < embed.report["metrics"]["fp32"]["size_bytes"] / 4


def test_fp16_halves_the_model_keeps_float32_io_and_says_it_is_no_faster_on_x86(recipes, tmp_path):
    import onnx

    result = _build(recipes("quant=fp16"), tmp_path / "out", tmp_path / "cache")
    model = _model(result, "fp16")
    onnx.checker.check_model(model)
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert {types[w] for w in ("w1", "w2", "w3")} == {onnx.TensorProto.FLOAT16}
    io = [v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]]
    assert io == [onnx.TensorProto.FLOAT] * 2, "callers feed and read float32 as with the FP32 model"
    sizes = {v: m["size_bytes"] for v, m in result.report["metrics"].items()}
    assert 0.45 < sizes["fp16"] / sizes["fp32"] < 0.55, sizes  # 38351 / 74876 measured
    assert result.report["fidelity"]["fp16"]["cosine_min"] > 0.9999
    note = result.report["schemes"]["fp16"]["note"]
    assert "x86" in note and "not make it faster" in note
    md = (result.out_dir / "report.md").read_text()
    assert f"fp16: {note}" in md, "report.md shows the note under the variant table"
    assert md.index(note) < md.index("## Steps")


def test_a_model_without_matmul_is_refused_before_anything_runs(recipes, tmp_path):
    from qcompile import BadInput, compile_plan

    cache = tmp_path / "cache"
    with pytest.raises(BadInput) as e:
        _build(recipes(f"model.path={tmp_path}/gemm.onnx", "model.task=classification"), tmp_path / "out", cache)
    assert e.value.key == "quant.kind" and e.value.exit_code == 2
    msg = str(e.value)
    assert "leave the model unchanged" in msg and "Gemm" in msg and len(msg.splitlines()) == 1
    assert cache_entries(cache) == []
    # Every MatMul excluded is the same: nothing would be quantized.
    with pytest.raises(BadInput, match="outside quant.exclude"):
        compile_plan(recipes("quant.exclude.op_types=[MatMul]"))
    with pytest.raises(BadInput, match="quant.exclude.names"):
        compile_plan(recipes("quant.exclude.names=[/head/Matmul]"))


def test_a_matmul_without_constant_weight_fails_its_step_and_leaves_nothing_cached(recipes, tmp_path):
    """Known only once quantized: the step raises bad input, and the scheduler removes what the build stored."""
    from qcompile import BadInput

    cache = tmp_path / "cache"
    with pytest.raises(BadInput) as e:
        _build(recipes(f"model.path={tmp_path}/attention.onnx"), tmp_path / "out", cache)
    assert e.value.key == "quant.kind" and "computed at run time" in str(e.value)
    assert cache_entries(cache) == [], "the model and data steps that ran before it are removed too"


def test_the_cli_exits_2_naming_quant_kind(recipes, tmp_path):
    proc = run_cli("build", "--config-dir", str(tmp_path), "--config-name", "mlp", f"model.path={tmp_path}/gemm.onnx",
                   "model.task=classification", cache=tmp_path / "cache", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "quant.kind:" in proc.stderr and "Traceback" not in proc.stderr
    assert cache_entries(tmp_path / "cache") == []


@pytest.mark.parametrize("overrides, key, fragment", [
    (["quant.blocksize=64"], "quant.blocksize", "did you mean 'block_size'"),
    (["quant.block_size=48"], "quant.block_size", "16, 32, 64, 128, 256"),
    (["quant.algorithm=awq"], "quant.algorithm", "default, rtn, hqq, gptq"),
    (["quant.accuracy_level=5"], "quant.accuracy_level", "less than or equal to 4"),
    (["quant.op_types=[Gemm]"], "quant.op_types[0]", "not one of: MatMul, Gather"),
    (["quant.algorithm=hqq", "quant.symmetric=true"], "quant.symmetric", "asymmetric"),
    (["quant.algorithm=rtn", "quant.op_types=[MatMul,Gather]"], "quant.op_types", "only algorithm=default"),
    (["quant=fp16", "quant.block_size=32"], "quant.block_size", "unknown key"),
])
def test_bad_options_are_refused_naming_the_key(overrides, key, fragment, recipes):
    from qcompile import BadInput, compile_plan

    with pytest.raises(BadInput) as e:
        compile_plan(recipes(*overrides))
    assert str(e.value).startswith(f"{key}:") and fragment in str(e.value), str(e.value)


def test_importing_the_quantizer_leaves_the_root_logger_alone():
    """ORT's matmul_nbits_quantizer calls logging.basicConfig(level=INFO) when imported: qcompile takes the handler
    and the level back."""
    code = ("import logging\nfrom qcompile.steps.quantize_int4 import import_quantizer\nimport_quantizer()\n"
            "import sys\nroot = logging.getLogger()\n"
            "print(root.handlers, logging.getLevelName(root.level), "
            "'onnxruntime.quantization.matmul_nbits_quantizer' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "WARNING", "True"]
