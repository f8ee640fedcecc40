"""Reference runner shipped as ``run.py`` in the bundle of a sentence encoder. Standalone: numpy, tokenizers and
onnxruntime.

    python run.py "A man is eating food." "A man is eating a piece of bread."   # every pair's cosine similarity
    python run.py --first QUERY OTHER [OTHER ...]                              # the first sentence against the rest

It first checks every file of the bundle against manifest.json's digests (exit 2 naming the file that differs),
then tokenizes exactly as text.json says, as qcompile did when it calibrated and measured the model: tokenizer.json
with its own padding and truncation replaced by text.json's (truncate each sentence at max_length tokens, special
tokens included; pad the batch on the right to its longest encoding with pad_id, attention mask and type ids 0
there), the inputs fed in text.json's order as int64 [batch, sequence]. The model pools (and, when normalize is
true, L2-normalises) inside its graph; two sentences' similarity is the cosine of their embeddings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


class BundleError(ValueError):
    """The bundle or an input is unusable; the message names the file."""


# What text.json may hold; ``check_spec`` vets every value the runner reads before it reads one.
KEYS = ("tokenizer", "inputs", "input_dtype", "input_shape", "encoding_fields", "max_length", "max_positions",
        "truncation", "padding", "pooling", "normalize", "hidden_size", "output", "similarity", "steps")
FIELDS = ("ids", "type_ids", "attention_mask")  # the tokenizers Encoding attributes an input may take
STRATEGIES = ("longest_first", "only_first", "only_second")


def _count(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


# The same function as the image runner's (a test holds them equal): each runner ships alone as run.py.
def verify_bundle(folder: Path = HERE) -> str | None:
    """None when every file matches manifest.json's sha256, else a one-line reason naming the file."""
    import hashlib

    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        files, model_file = manifest["files"], manifest["model"]["file"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"manifest.json is missing or unreadable ({type(e).__name__})"
    if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
        return "manifest.json: files is not an object of file name -> sha256"
    for name in sorted(files):
        # Bundle files are flat names: "../x" or "/x" would reach outside the bundle.
        if not name or Path(name).name != name or name in (".", ".."):
            return f"manifest.json: files names {name!r}, which no bundle holds"
    if model_file not in files:
        return f"manifest.json: model.file {model_file!r} is not one of its files"
    for name, digest in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing from the bundle"
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return f"{name} does not match manifest.json: the bundle was altered after it was built"
    return None


def check_spec(spec) -> dict:
    """``spec`` (a parsed text.json) when every key is known and every value the runner reads is one it can
    apply; else ``BundleError`` naming text.json and the key."""
    def bad(key: str, why: str):
        return BundleError(f"text.json: {key}: {why}")

    if not isinstance(spec, dict):
        raise bad("(top level)", "not a JSON object")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise bad(unknown[0], f"not a setting of the text contract (known: {', '.join(KEYS)})")
    if not isinstance(spec.get("tokenizer"), str):
        raise bad("tokenizer", "not a file name")
    fields, names = spec.get("encoding_fields"), spec.get("inputs")
    if not isinstance(fields, dict) or not all(f in FIELDS for f in fields.values()):
        raise bad("encoding_fields", f"not an object of input name -> one of {', '.join(FIELDS)}")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n in fields for n in names):
        raise bad("inputs", "not a list of the input names encoding_fields maps")
    cut, pad = spec.get("truncation"), spec.get("padding")
    if not (isinstance(cut, dict) and _count(cut.get("max_length"), 1) and _count(cut.get("stride"), 0)
            and cut.get("strategy") in STRATEGIES and cut.get("direction") in ("left", "right")):
        raise bad("truncation", f"needs max_length >= 1, stride >= 0, strategy one of {', '.join(STRATEGIES)}, "
                  "direction left or right")
    if not (isinstance(pad, dict) and _count(pad.get("min_length"), 0) and _count(pad.get("pad_id"), 0)
            and all(_count(pad.get(n, 0), 0) for n in names if n != "input_ids")):
        raise bad("padding", "needs min_length and pad_id as integers >= 0 (and each input's pad value)")
    if not isinstance(spec.get("output"), dict) or not isinstance(spec["output"].get("name"), str):
        raise bad("output", "needs the model output's name")
    return spec


def load_tokenizer(folder: Path, spec: dict):
    """The bundle's tokenizer, its file's padding and truncation replaced by text.json's."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise BundleError("this bundle needs the tokenizers library: pip install tokenizers") from None
    path = folder / spec["tokenizer"]
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception type on a malformed file
        raise BundleError(f"{spec['tokenizer']} is not a tokenizer the tokenizers library reads "
                          f"({str(e)[:120]})") from None
    # tokenizer.json may carry its own settings (MiniLM's pads every text to 128): the contract's replace them.
    tok.no_padding()
    cut = spec["truncation"]
    tok.enable_truncation(cut["max_length"], stride=cut["stride"], strategy=cut["strategy"],
                          direction=cut["direction"])
    return tok


def encode(tok, sentences: list[str], spec: dict) -> dict:
    """The model's inputs for ``sentences`` (one batch), by input name, in text.json's order."""
    import numpy as np

    encodings = tok.encode_batch(list(sentences))
    pad = spec["padding"]
    width = max([len(e.ids) for e in encodings] + [pad["min_length"]])
    feed = {}
    for name in spec["inputs"]:
        field = spec["encoding_fields"][name]
        arr = np.full((len(sentences), width), pad["pad_id"] if name == "input_ids" else pad.get(name, 0), np.int64)
        for row, e in enumerate(encodings):
            values = getattr(e, field)
            arr[row, :len(values)] = values
        feed[name] = arr
    return feed


def embed(folder: Path, sentences: list[str]):
    """(the model's output for ``sentences``, the inputs fed, text.json): float64 [batch, hidden] embeddings, or
    [batch, sequence, hidden] token embeddings for a model without pooling."""
    import numpy as np
    import onnxruntime as ort

    if not sentences:
        raise BundleError("give at least one sentence (a text bundle takes sentences, not files)")
    manifest = json.loads((folder / "manifest.json").read_text())  # verify_bundle has read it
    try:
        spec = json.loads((folder / "text.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"text.json cannot be read as JSON ({type(e).__name__}: {str(e)[:120]})") from None
    check_spec(spec)
    # Only a file the manifest lists (a flat name, its digest checked) is read: never a path out of the bundle.
    if spec["tokenizer"] not in manifest["files"]:
        raise BundleError(f"text.json: tokenizer: {spec['tokenizer']!r} is not one of manifest.json's files")
    model_file = manifest["model"]["file"]
    if model_file.endswith(".engine"):
        raise BundleError(f"{model_file} is a TensorRT engine: run it with TensorRT, not onnxruntime")
    feed = encode(load_tokenizer(folder, spec), sentences, spec)
    try:
        sess = ort.InferenceSession(str(folder / model_file), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Exception types for a file it cannot load
        raise BundleError(f"{model_file} cannot be loaded by onnxruntime ({str(e)[:160]})") from None
    outputs = [o.name for o in sess.get_outputs()]
    if spec["output"]["name"] not in outputs or set(feed) != {i.name for i in sess.get_inputs()}:
        raise BundleError(f"text.json: output, inputs: {spec['output']['name']!r}, {list(feed)} are not the outputs "
                          f"and inputs of {model_file}")
    out = sess.run([spec["output"]["name"]], feed)[0]
    return np.asarray(out, dtype=np.float64), feed, spec


def cosine(a, b) -> float:
    """Cosine similarity of two vectors (0 when either is all zeros)."""
    import numpy as np

    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm else 0.0


def pairs(n: int, first: bool = False) -> list[tuple[int, int]]:
    """Index pairs to compare: every pair (i < j), or the first sentence with each other one."""
    if first:
        return [(0, j) for j in range(1, n)]
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def format_results(sentences: list[str], out, feed: dict, spec: dict, first: bool = False) -> list[str]:
    """One line per sentence (dimension and norm of its embedding), then one per pair: ``cosine(1, 2): 0.812345``."""
    import numpy as np

    quoted = [json.dumps(s, ensure_ascii=False) for s in sentences]
    if out.ndim == 3:  # token embeddings: no sentence vector to compare
        tokens = feed["attention_mask"].sum(axis=1)
        return [f"{i}: {int(t)} tokens x {out.shape[2]} dims  {q}" for i, (t, q) in enumerate(zip(tokens, quoted), 1)]
    lines = [f"{i}: {out.shape[1]} dims, norm {float(np.linalg.norm(v)):.6f}  {q}"
             for i, (v, q) in enumerate(zip(out, quoted), 1)]
    lines += [f"cosine({i + 1}, {j + 1}): {cosine(out[i], out[j]):.6f}" for i, j in pairs(len(sentences), first)]
    return lines


def run(folder: Path, sentences: list[str], first: bool = False) -> list[str]:
    """Embed ``sentences`` with the bundle in ``folder`` (already verified) and return the printable lines."""
    out, feed, spec = embed(folder, sentences)
    return format_results(sentences, out, feed, spec, first)


def main(argv: list[str] | None = None, folder: Path = HERE) -> int:
    """Verify the bundle, then print each sentence's embedding and the pairs' cosine similarities. Exit 2 on a bad
    bundle or no sentence."""
    import argparse

    p = argparse.ArgumentParser(prog="run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # "*", not "+": no sentence is reported in one line below, as qcompile run reports it.
    p.add_argument("sentences", nargs="*", metavar="SENTENCE", help="sentences (quote each one)")
    p.add_argument("--first", action="store_true", help="compare the first sentence with each other one only")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)  # --help exits 0, a bad flag exits 2
    problem = verify_bundle(folder)
    try:
        if problem:
            raise BundleError(problem)
        lines = run(folder, args.sentences, args.first)
    except BundleError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
