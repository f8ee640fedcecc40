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


# The same function as the image runner's (a test holds them equal): each runner ships alone as run.py.
def verify_bundle(folder: Path = HERE) -> str | None:
    """None when every file matches manifest.json's sha256, else a one-line reason naming the file."""
    import hashlib

    try:
        files = json.loads((folder / "manifest.json").read_text())["files"]
    except (OSError, ValueError, KeyError) as e:
        return f"manifest.json is missing or unreadable ({type(e).__name__})"
    for name, digest in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing from the bundle"
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return f"{name} does not match manifest.json: the bundle was altered after it was built"
    return None


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
    manifest = json.loads((folder / "manifest.json").read_text())
    spec = json.loads((folder / "text.json").read_text())
    model_file = manifest["model"]["file"]
    if model_file.endswith(".engine"):
        raise BundleError(f"{model_file} is a TensorRT engine: run it with TensorRT, not onnxruntime")
    feed = encode(load_tokenizer(folder, spec), sentences, spec)
    sess = ort.InferenceSession(str(folder / model_file), providers=["CPUExecutionProvider"])
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
