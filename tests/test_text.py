"""Transformers and text: a local Hugging Face encoder exported with its pooling, text data tokenized by its own
tokenizer, Spearman/Pearson against human scores, latency per sequence length, and the bad input around them.

The end-to-end builds use a tiny random-init BERT (2 layers, hidden 32) with all-MiniLM-L6-v2's real tokenizer
(tests/text_fixtures.py): its correlations are plumbing, not quality claims."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import cache_entries, run_cli
from .text_fixtures import recipe_overrides, text_files, tiny_encoder

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text")
    (root / "enc").mkdir()
    return {"model": tiny_encoder(root / "enc"), **text_files(root / "txt"), "root": root}


@pytest.fixture(scope="module")
def built(assets, tmp_path_factory):
    """One dynamic INT8 build of the tiny encoder through the CLI: (work dir, cache, report)."""
    work, cache = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("cache")
    proc = run_cli("build", *recipe_overrides(assets["model"], assets), "hydra.run.dir=a", cache=cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, cache, json.loads((work / "a" / "report.json").read_text())


def _tokenize(assets, texts):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(assets["model"] / "tokenizer.json"))
    tok.enable_truncation(64)
    tok.enable_padding()
    enc = tok.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in enc], np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}


def test_encoder_build_scores_spearman_against_an_independent_computation(built, assets):
    import onnxruntime as ort
    from scipy.stats import pearsonr, spearmanr

    work, _, report = built
    m = report["metrics"]
    assert set(report["variants"]) == {"fp32", "int8_dynamic"}
    assert report["schemes"]["int8_dynamic"]["per_channel"] is True, "per-channel: the encoder's recommendation"
    assert "Gather" in report["schemes"]["int8_dynamic"]["op_types"]
    # The FP32 ONNX model, run here on the same texts with the tokenizer's own padding, and scored with scipy.
    sess = ort.InferenceSession(str(work / "a" / "artifacts" / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "token_type_ids", "attention_mask"]
    assert [i.shape for i in sess.get_inputs()] == [["batch", "sequence"]] * 3
    assert all(i.type == "tensor(int64)" for i in sess.get_inputs())
    texts = assets["texts"].read_text().splitlines()
    emb = sess.run(None, _tokenize(assets, texts))[0]
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5), "modules.json names Normalize"
    scores = np.loadtxt(assets["scores"])
    iu = np.triu_indices(len(texts), 1)
    cos = (emb @ emb.T)[iu]
    assert m["fp32"]["spearman"] == pytest.approx(spearmanr(cos, scores[iu])[0], abs=1e-4)
    assert m["fp32"]["pearson"] == pytest.approx(pearsonr(cos, scores[iu])[0], abs=1e-4)
    assert report["correlation_drop"]["int8_dynamic"] == pytest.approx(
        m["fp32"]["spearman"] - m["int8_dynamic"]["spearman"], abs=1e-6)
    assert report["fidelity"]["int8_dynamic"]["cosine_mean"] > 0.9
    assert set(m["fp32"]["latency_ms"]) == {"1x16"}, "latency per batch size and sequence length"
    md = (work / "a" / "report.md").read_text()
    assert "| Spearman | Pearson |" in md and "(batch 1, 16 tokens)" in md


def test_pooling_and_normalisation_follow_the_recipe(assets, tmp_path, cache_dir):
    """CLS pooling without normalisation is another model: other outputs, norms not 1."""
    proc = run_cli("build", *recipe_overrides(assets["model"], assets), "model.pooling=cls",
                   "model.normalize=false", "quant=none", "hydra.run.dir=cls", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "cls" / "artifacts" / "model.fp32.onnx"),
                                providers=["CPUExecutionProvider"])
    feed = _tokenize(assets, ["The cat sat on the mat.", "A much longer sentence about the stock market today."])
    emb = sess.run(None, feed)[0]
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3)
    # CLS pooling: the first token's hidden state, whatever the padding after it.
    one = sess.run(None, {k: v[:1, :int(feed["attention_mask"][0].sum())] for k, v in feed.items()})[0]
    assert np.allclose(one[0], emb[0], atol=1e-5)


def test_editing_the_scores_reruns_evaluation_not_the_export(built, assets, tmp_path):
    work, cache, _ = built
    scores = tmp_path / "scores.txt"
    m = np.loadtxt(assets["scores"])
    np.savetxt(scores, m[::-1, ::-1])  # other pairs get other scores
    args = [a if not a.startswith("data.scores=") else f"data.scores={scores}"
            for a in recipe_overrides(assets["model"], assets)]
    proc = run_cli("build", *args, "hydra.run.dir=b", cache=cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = {s["name"]: s["status"] for s in json.loads((work / "b" / "report.json").read_text())["steps"]}
    assert steps["export"] == steps["quantize"] == "cached"
    assert steps["data"] == steps["evaluate.fp32"] == "ran"


@pytest.mark.parametrize("override, key, fragment", [
    ("data.max_length=512", "data.max_length", "at most 128 tokens"),
    ("bench.sequence_lengths=[1000]", "bench.sequence_lengths", "at most 128"),
    ("model.pooling=median", "model.pooling", "median"),
    ("eval.max_accuracy_drop=0.01", "eval.max_accuracy_drop", "no top1 accuracy"),
])
def test_bad_text_recipes_exit_2_naming_the_key(assets, tmp_path, cache_dir, override, key, fragment):
    args = [a for a in recipe_overrides(assets["model"], assets) if not a.startswith(override.split("=")[0] + "=")]
    proc = run_cli("build", *args, override, cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and key in proc.stderr and fragment in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and cache_entries(cache_dir) == []


def test_bad_text_files_exit_2_naming_the_file_and_write_nothing(assets, tmp_path, cache_dir):
    bad_scores = tmp_path / "scores.txt"
    bad_scores.write_text(assets["scores"].read_text().replace("1.000", "high", 1))
    bad_pairs = tmp_path / "pairs.tsv"
    bad_pairs.write_text("a cat\ta dog\t0.5\na car\ta bus\tsimilar\n")
    no_tok = tmp_path / "no-tokenizer"
    no_tok.mkdir()
    for f in assets["model"].iterdir():
        if f.is_file() and f.name != "tokenizer.json":
            (no_tok / f.name).write_bytes(f.read_bytes())
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (no_weights / f).write_bytes((assets["model"] / f).read_bytes())
    base = recipe_overrides(assets["model"], assets)
    cases = [
        ([f"data.scores={bad_scores}"], "data.scores", "'high' is not a number"),
        ([f"data.pairs={bad_pairs}", "~data.texts", "~data.scores"], "data.pairs", "line 2: score 'similar'"),
        ([f"model.path={no_tok}"], "model.path", "no tokenizer.json"),
        ([f"model.path={no_weights}"], "model.path", "holds no weights"),
        (["~data.calibration"], "data.calibration", "set data.calibration"),
    ]
    for extra, key, fragment in cases:
        drop = {e.lstrip("~").split("=")[0] for e in extra}
        args = [a for a in base if a.split("=")[0] not in drop] + [e for e in extra if not e.startswith("~")]
        proc = run_cli("build", *args, cache=cache_dir, cwd=tmp_path)
        assert proc.returncode == 2 and key in proc.stderr and fragment in proc.stderr, (extra, proc.stderr[-2000:])
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert cache_entries(cache_dir) == [], extra


def test_text_data_for_an_image_model_and_image_data_for_a_text_model(assets, tmp_path, cache_dir):
    proc = run_cli("build", "data=text", f"data.texts={assets['texts']}", f"data.calibration={assets['calibration']}",
                   cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "data.kind=text needs a tokenizer" in proc.stderr \
        and "model.kind=mnist_cnn provides none" in proc.stderr, proc.stderr
    proc = run_cli("build", "model=hf_encoder", f"model.path={assets['model']}", "data=digits",
                   "eval.max_accuracy_drop=null", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "data.kind" in proc.stderr and "input_ids" in proc.stderr, proc.stderr
    assert cache_entries(cache_dir) == []


def test_similarity_scores_match_scipy_with_ties():
    from scipy.stats import pearsonr, spearmanr

    from qcompile.steps.metrics import ranks, similarity_scores

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((20, 8))
    pairs = np.array([(i, j, round(rng.uniform(), 1)) for i in range(20) for j in range(i + 1, 20)])  # ties
    got = similarity_scores(emb, pairs)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = (unit[pairs[:, 0].astype(int)] * unit[pairs[:, 1].astype(int)]).sum(1)
    assert got["spearman"] == pytest.approx(spearmanr(cos, pairs[:, 2])[0], abs=1e-9)
    assert got["pearson"] == pytest.approx(pearsonr(cos, pairs[:, 2])[0], abs=1e-9)
    assert list(ranks(np.array([3.0, 1.0, 3.0, 2.0]))) == [3.5, 1.0, 3.5, 2.0]


def test_correlation_gate_message_names_the_key_and_both_values():
    from qcompile.steps.compare import CompareOutputsStep

    result = {"variant": "int4", "reference": "fp32", "fidelity": {"cosine_mean": 0.97},
              "scores": {"fp32": {"spearman": 0.5083, "pearson": 0.65}, "int4": {"spearman": 0.4712, "pearson": 0.6}},
              "drop": {"spearman": 0.0371, "pearson": 0.05}}
    msg = CompareOutputsStep().check(result, {"max_correlation_drop": 0.02})
    assert msg == ("int4 Spearman correlation with the human scores 0.4712 is 0.0371 below fp32's 0.5083; "
                   "eval.max_correlation_drop=0.02 allows 0.0200")
    assert CompareOutputsStep().check(result, {"max_correlation_drop": 0.05}) is None


def test_token_batches_are_cut_to_their_longest_text_and_benchmarks_fill_the_length():
    from qcompile.steps.arrays import trim_padding
    from qcompile.steps.benchmark import feed_of

    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], np.int64)
    ids = np.array([[101, 7, 102, 0, 0, 0], [101, 102, 0, 0, 0, 0]], np.int64)
    cut = trim_padding({"input_ids": ids, "attention_mask": mask})
    assert cut["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    feed = feed_of({"input_ids": ids, "attention_mask": mask}, batch=3, sequence=8)
    assert feed["input_ids"].shape == (3, 8) and feed["attention_mask"].all()
    assert feed["input_ids"][0].tolist() == [101, 7, 102, 101, 7, 102, 101, 7], "the longest text first, repeated"


@pytest.mark.parametrize("module, fragment", [
    ("transformers", "model.kind=hf_encoder needs transformers: pip install 'qcompile[transformers]'"),
    ("tokenizers", "data.kind=text needs tokenizers"),
    ("gensim", "data.texts, data.scores, data.calibration: the package gensim is not installed (pip install "
               "'qcompile[minilm]')"),
])
def test_missing_extras_are_named(cache_dir, tmp_path, module, fragment):
    """Each optional library is an extra: without it the packaged recipe exits 2 at plan time naming the pip
    command."""
    import os
    import subprocess
    import sys

    code = (f"import sys; sys.modules[{module!r}] = None  # as if not installed: find_spec answers None\n"
            "from qcompile.cli import main; sys.exit(main(['build', '--config-name', 'minilm_lee50']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "QCOMPILE_CACHE_DIR": str(cache_dir)})
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and cache_entries(cache_dir) == []


def test_an_onnx_file_of_a_transformer_gets_the_encoder_defaults(built, assets, tmp_path):
    """A transformer exported by hand (an ONNX file fed token ids and an attention mask) is quantized as an
    encoder: static INT8 on weight MatMuls only, so the mask's large negative bias never shares a uint8 range with
    the attention scores; dynamic per-channel."""
    import qcompile
    from qcompile.plan import compile_plan

    work, cache, _ = built
    onnx_file = work / "a" / "artifacts" / "model.fp32.onnx"
    feed = _tokenize(assets, assets["texts"].read_text().splitlines())
    np.savez(tmp_path / "tokens.npz", **feed)
    common = ["model=onnx", f"model.path={onnx_file}", "model.task=embedding", "data=npz",
              f"data.path={tmp_path / 'tokens.npz'}", "data.y_key=null", "data.eval_samples=6",
              "eval.max_accuracy_drop=null"]
    static = compile_plan(qcompile.load_recipe("demo", [*common, "quant.calibration.samples=6"]))
    params = static.node("quantize").params
    assert params.op_types == ["MatMul", "Gemm"] and params.weight_matmuls_only
    assert static.node("optimize").params.skip_symbolic_shape
    dynamic = compile_plan(qcompile.load_recipe("demo", [*common, "quant=int8_dynamic"]))
    assert dynamic.node("quantize").params.per_channel is True
    # An image model keeps the plain defaults.
    plain = compile_plan(qcompile.load_recipe("demo", ["quant=int8_dynamic"]))
    assert plain.node("quantize").params.per_channel is False
    assert plain.node("quantize").params.op_types == ["MatMul", "Gemm"]


def test_an_encoder_build_reproduces_byte_for_byte_from_its_lockfile(built, tmp_path):
    """Export (dynamo), tokenization, quantization and the bundle are deterministic: replayed on an empty cache
    they give the same digests."""
    from qcompile.builds.reproduce import reproduce
    from qcompile.cache import Cache
    from qcompile.run.progress import Reporter

    work, _, _ = built
    result = reproduce(work / "a" / "qcompile.lock.json", tmp_path / "again", Cache(tmp_path / "empty"),
                       Reporter(quiet=True))
    assert result.identical, result.first_difference
