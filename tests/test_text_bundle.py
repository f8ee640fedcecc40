"""A sentence encoder's bundle is usable on its own: it holds tokenizer.json and text.json (the contract), its run.py
and ``qcompile run`` take sentences and print cosine similarities equal to those of the model's own embeddings on
the pipeline's tokenization, and a tampered bundle or no sentence is exit 2 in one line. ``qcompile run`` imports
no Python from a text bundle and refuses a text.json it cannot apply as written. One tiny real build (random-init
BERT, MiniLM's tokenizer) serves the module."""

from __future__ import annotations

import ast
import inspect
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import run_cli
from .test_run_bundle import crafted, with_payload
from .text_fixtures import recipe_overrides, text_files, tiny_encoder

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell."]
FILES = {"manifest.json", "model.onnx", "run.py", "text.json", "tokenizer.json"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(work folder, cache, model folder, bundle.zip, its unpacked folder) of one tiny int8_dynamic text build."""
    work = tmp_path_factory.mktemp("text-bundle")
    model = tiny_encoder(work / "encoder")
    cache = work / "cache"
    proc = run_cli("build", *recipe_overrides(model, text_files(work / "data")), "hydra.run.dir=out",
                   cache=cache, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundle = work / "out" / "artifacts" / "bundle.zip"
    with zipfile.ZipFile(bundle) as z:
        z.extractall(work / "unpacked")
    return work, cache, model, bundle, work / "unpacked"


def unpacked_copy(built, tmp_path) -> Path:
    folder = tmp_path / "bundle"
    shutil.copytree(built[4], folder)
    return folder


def pipeline_tokens(model: Path, sentences: list[str], spec: dict) -> dict[str, np.ndarray]:
    """The tokenization qcompile's data step applied for calibration and evaluation."""
    from qcompile.steps.text import tokenize

    return tokenize(str(model / "tokenizer.json"), sentences, tuple(spec["inputs"]), spec["max_length"])


def printed(stdout: str) -> tuple[list[float], dict[tuple[int, int], float]]:
    """(norm per sentence, cosine per pair) from the runner's lines."""
    norms = [float(m) for m in re.findall(r"^\d+: \d+ dims, norm ([0-9.]+)", stdout, re.M)]
    cos = {(int(a), int(b)): float(v) for a, b, v in re.findall(r"^cosine\((\d+), (\d+)\): (-?[0-9.]+)$", stdout,
                                                                  re.M)}
    return norms, cos


def test_bundle_holds_the_tokenizer_and_the_text_contract(built):
    _, _, model, bundle, folder = built
    assert set(zipfile.ZipFile(bundle).namelist()) == FILES  # no image preprocessing in a text bundle
    assert (folder / "tokenizer.json").read_bytes() == (model / "tokenizer.json").read_bytes()
    import qcompile.bundle as b

    assert (folder / "run.py").read_bytes() == (Path(b.__file__).parent / "text_runner.py").read_bytes()
    spec = json.loads((folder / "text.json").read_text())
    assert spec["tokenizer"] == "tokenizer.json"
    assert spec["inputs"] == ["input_ids", "token_type_ids", "attention_mask"]
    assert spec["input_dtype"] == "int64" and spec["input_shape"] == ["batch", "sequence"]
    assert spec["max_length"] == 64 and spec["truncation"]["max_length"] == 64  # sentence_bert_config's
    assert spec["padding"]["to"] == "longest in batch"
    assert spec["padding"]["pad_id"] == 0 and spec["padding"]["pad_token"] == "[PAD]"
    assert spec["pooling"] == "mean" and spec["normalize"] is True and spec["hidden_size"] == 32
    assert spec["output"]["name"] == "sentence_embedding" and spec["output"]["shape"] == ["batch", 32]
    assert "mean" in spec["output"]["meaning"] and "L2-normalised" in spec["output"]["meaning"]
    assert spec["similarity"] == "cosine" and len(spec["steps"]) >= 4
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == FILES - {"manifest.json"}
    assert manifest["model"]["inputs"] == spec["inputs"] and manifest["model"]["outputs"] == ["sentence_embedding"]


def test_pad_id_is_the_data_steps_without_the_tokenizers_library(built):
    """text.json's pad id is read from the JSON by hand; the data step asks the tokenizers library."""
    from tokenizers import Tokenizer

    from qcompile.bundle.text import pad_token

    path = built[2] / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    assert pad_token(json.loads(path.read_text())) == ("[PAD]", tok.token_to_id("[PAD]"))
    for token in ("[CLS]", "hello", "##ing"):
        from qcompile.bundle.text import token_id

        assert token_id(json.loads(path.read_text()), token) == tok.token_to_id(token)


def test_qcompile_run_prints_the_cosine_of_the_models_embeddings(built, tmp_path):
    """The printed similarities equal the cosine of what the bundle's ONNX model returns, with onnxruntime, on the
    tokenization the pipeline itself used (which is what text.json describes)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    work, cache, model, bundle, folder = built
    proc = run_cli("run", str(bundle), *SENTENCES, cache=cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    norms, cos = printed(proc.stdout)
    assert len(norms) == 3 and set(cos) == {(1, 2), (1, 3), (2, 3)}, proc.stdout

    spec = json.loads((folder / "text.json").read_text())
    # Apply text.json by hand, as an app would.
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(spec["max_length"])
    enc = tok.encode_batch(SENTENCES)
    width = max(len(e.ids) for e in enc)
    feed = {n: np.full((3, width), spec["padding"]["pad_id"] if n == "input_ids" else 0, np.int64)
            for n in spec["inputs"]}
    for row, e in enumerate(enc):
        for n in spec["inputs"]:
            values = getattr(e, spec["encoding_fields"][n])
            feed[n][row, :len(values)] = values
    from qcompile.bundle.text_runner import encode, load_tokenizer

    runner_feed = encode(load_tokenizer(folder, spec), SENTENCES, spec)
    assert list(runner_feed) == spec["inputs"]  # the ONNX inputs' order
    for n, arr in pipeline_tokens(model, SENTENCES, spec).items():
        np.testing.assert_array_equal(feed[n], arr, err_msg=n)
        np.testing.assert_array_equal(runner_feed[n], arr, err_msg=n)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    emb = sess.run(["sentence_embedding"], feed)[0].astype(np.float64)
    for i, norm in enumerate(norms):
        assert abs(norm - np.linalg.norm(emb[i])) < 2e-6
    for (a, b), value in cos.items():
        u, v = emb[a - 1], emb[b - 1]
        assert abs(value - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))) < 2e-6, (a, b)

    first = run_cli("run", str(folder), *SENTENCES, "--first", cache=cache, cwd=tmp_path)
    assert first.returncode == 0 and set(printed(first.stdout)[1]) == {(1, 2), (1, 3)}, first.stderr


def test_standalone_run_py_prints_the_same_lines(built, tmp_path):
    """The bundle's run.py, from another working directory, in a fresh process: the same lines as qcompile run."""
    work, cache, _, bundle, folder = built
    ours = run_cli("run", str(bundle), *SENTENCES, cache=cache, cwd=tmp_path)
    proc = subprocess.run([sys.executable, str(folder / "run.py"), *SENTENCES], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ours.stdout and "cosine(1, 2)" in proc.stdout
    helped = subprocess.run([sys.executable, str(folder / "run.py"), "--help"], capture_output=True, text=True,
                            timeout=300)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: run.py") and "--first" in helped.stdout


def test_long_text_is_cut_at_max_length_and_a_sentence_naming_a_file_stays_a_sentence(built, tmp_path):
    from qcompile.bundle.text_runner import encode, load_tokenizer

    folder = built[4]
    spec = json.loads((folder / "text.json").read_text())
    feed = encode(load_tokenizer(folder, spec), ["word " * 500, "short"], spec)
    assert feed["input_ids"].shape == (2, spec["max_length"])
    assert feed["attention_mask"][1].sum() < spec["max_length"] and feed["input_ids"][1, -1] == 0
    (tmp_path / "notes.txt").write_text("not read")
    proc = run_cli("run", str(built[3]), "notes.txt", "missing.png", cache=built[1], cwd=tmp_path)
    assert proc.returncode == 0 and '"notes.txt"' in proc.stdout and "cosine(1, 2)" in proc.stdout, proc.stderr


@pytest.mark.parametrize("runner", ["qcompile", "run.py"])
def test_tampered_tokenizer_or_no_sentence_is_exit_2_in_one_line(built, runner, tmp_path):
    folder = unpacked_copy(built, tmp_path)

    def run(*sentences):
        if runner == "qcompile":
            return run_cli("run", str(folder), *sentences, cache=built[1], cwd=tmp_path)
        return subprocess.run([sys.executable, str(folder / "run.py"), *sentences], capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)

    proc = run()
    assert proc.returncode == 2 and "sentence" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    tok = folder / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"[PAD]"', '"[PAD ]"', 1))
    proc = run(*SENTENCES)
    assert proc.returncode == 2 and "tokenizer.json does not match manifest.json" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == "", proc.stderr


def test_the_text_runner_needs_only_numpy_tokenizers_onnxruntime():
    """run.py ships alone in a text bundle: no qcompile, no torch, no transformers; its manifest check is the
    image runner's."""
    from qcompile.bundle import runner, text_runner

    allowed = {"numpy", "tokenizers", "onnxruntime", "__future__", "argparse", "json", "sys", "pathlib", "hashlib"}
    tree = ast.parse(Path(text_runner.__file__).read_text())
    mods = {(n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
            for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert mods <= allowed, mods - allowed
    assert inspect.getsource(text_runner.verify_bundle) == inspect.getsource(runner.verify_bundle)


def test_the_tokenizer_is_keyed_by_content_and_image_bundles_by_what_they_were(built, tmp_path):
    """The package key holds the tokenizer's digest, not its path: a copy of the model folder elsewhere keys the
    same, an edited tokenizer another. An image model's package params carry no text field at all."""
    from qcompile import load_recipe
    from qcompile.cache import Cache
    from qcompile.cache.keys import digest_json
    from qcompile.plan import compile_plan
    from qcompile.run.scheduler import key_material
    from qcompile.steps.base import get_step

    work, _, model, _, _ = built
    files = text_files(tmp_path / "data")
    cache = Cache(tmp_path / "cache")

    def key(folder: Path) -> str:
        node = compile_plan(load_recipe("demo", recipe_overrides(folder, files))).node("package")
        assert node.params.text["tokenizer"] == str(folder / "tokenizer.json")
        material = key_material(node, get_step(node.kind), {"model": "sha256:0"}, cache)
        assert str(folder) not in json.dumps(material)
        return digest_json(material)

    moved = tmp_path / "elsewhere"
    shutil.copytree(model, moved)
    assert key(model) == key(moved)
    (moved / "tokenizer.json").write_text((moved / "tokenizer.json").read_text() + "\n")
    assert key(model) != key(moved)
    image = compile_plan(load_recipe("demo")).node("package").params
    assert image.text is None and "text" not in image.model_dump(mode="json")


def test_contract_for_token_outputs_other_vocabularies_and_a_broken_tokenizer():
    """No pooling: token embeddings, no similarity, token counts printed. Unigram vocabularies (lists) and added
    tokens give the pad id as the tokenizers library would; a file that is no tokenizer is refused."""
    from qcompile.bundle.text import TokenizerFileError, pad_token, text_spec
    from qcompile.bundle.text_runner import format_results

    tok = json.dumps({"model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["<pad>", 0.0], ["▁a", -1.0]]}})
    contract = {"inputs": ["input_ids", "attention_mask"], "max_length": 16, "max_positions": 32, "pooling": "none",
                "normalize": False, "hidden_size": 4, "output": "token_embeddings"}
    spec = text_spec(contract, tok.encode())
    assert spec["padding"]["pad_id"] == 1 and spec["padding"]["pad_token"] == "<pad>"
    assert spec["similarity"] is None and spec["output"]["shape"] == ["batch", "sequence", 4]
    assert pad_token({"added_tokens": [{"id": 7, "content": "[PAD]"}], "model": {"vocab": {}}}) == ("[PAD]", 7)
    assert pad_token({"model": {"vocab": {"a": 0}}}) == (None, 0)
    lines = format_results(["a", "b c"], np.zeros((2, 5, 4)), {"attention_mask": np.array([[1, 1, 1, 0, 0],
                                                                                          [1, 1, 1, 1, 1]])}, spec)
    assert lines == ['1: 3 tokens x 4 dims  "a"', '2: 5 tokens x 4 dims  "b c"']
    with pytest.raises(TokenizerFileError):
        text_spec(contract, b"not json")
    with pytest.raises(TokenizerFileError, match="position_ids"):
        text_spec({**contract, "inputs": ["input_ids", "position_ids"]}, tok.encode())


def test_qcompile_run_imports_no_code_from_a_text_bundle(built, tmp_path):
    """Issue #19: a text bundle whose run.py writes a file when imported, and which carries a second module beside
    it, with a manifest to match: ``qcompile run`` prints the honest bundle's lines and nothing is written; the
    bundle's run.py, run by choice, runs that code."""
    work, cache, _, bundle, _ = built
    marker = tmp_path / "written-by-the-bundle"
    run = zipfile.ZipFile(bundle).read("run.py")
    evil = crafted(bundle, tmp_path / "evil.zip", {"run.py": with_payload(run, marker),
                                                   "text_runner.py": with_payload(run, marker)})
    honest = run_cli("run", str(bundle), *SENTENCES, cache=cache, cwd=tmp_path)
    assert honest.returncode == 0, honest.stderr
    zipfile.ZipFile(evil).extractall(tmp_path / "evil")
    for target in (evil, tmp_path / "evil"):
        proc = run_cli("run", str(target), *SENTENCES, cache=cache, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout == honest.stdout, proc.stderr
        assert not marker.exists(), f"qcompile run {target.name} ran the bundle's code"
    ran = subprocess.run([sys.executable, str(tmp_path / "evil" / "run.py")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert ran.returncode == 2 and marker.read_text() == "bundle code ran", ran.stderr


BAD_TEXT = {
    "not JSON": (lambda s: b"[1,", "text.json cannot be read as JSON"),
    "unknown setting": (lambda s: {**s, "exec": "import os"}, "text.json: exec: not a setting"),
    "tokenizer outside the bundle": (lambda s: {**s, "tokenizer": "../tokenizer.json"},
                                     "text.json: tokenizer: '../tokenizer.json' is not one of manifest.json's files"),
    "encoding attribute": (lambda s: {**s, "encoding_fields": {**s["encoding_fields"], "input_ids": "__class__"}},
                           "text.json: encoding_fields"),
    "input without a field": (lambda s: {**s, "inputs": s["inputs"] + ["position_ids"]}, "text.json: inputs"),
    "truncation strategy": (lambda s: {**s, "truncation": {**s["truncation"], "strategy": "middle"}},
                            "text.json: truncation"),
    "pad id": (lambda s: {**s, "padding": {**s["padding"], "pad_id": "0"}}, "text.json: padding"),
    "output name": (lambda s: {**s, "output": {**s["output"], "name": "logits"}}, "text.json: output"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEXT))
def test_a_text_json_the_runner_cannot_apply_is_bad_input_naming_file_and_key(case, built, tmp_path):
    from qcompile.bundle.run_bundle import run_bundle
    from qcompile.errors import BadInput

    edit, expected = BAD_TEXT[case]
    spec = edit(json.loads(zipfile.ZipFile(built[3]).read("text.json")))
    data = spec if isinstance(spec, bytes) else json.dumps(spec).encode()
    bad = crafted(built[3], tmp_path / "bad.zip", {"text.json": data})
    with pytest.raises(BadInput) as err:
        run_bundle(bad, SENTENCES)
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)
