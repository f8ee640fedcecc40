"""Reference runner shipped as ``run.py`` in every deployment bundle. Standalone: numpy, onnxruntime, Pillow.

    python run.py IMAGE [IMAGE ...]      # image files, for a one-image-input model (as preprocess.json says)
    python run.py SAMPLES.npy            # already-preprocessed samples of the model's single input, batch first
    python run.py SAMPLES.npz            # one array per input name, batch first (models with several inputs)
    python run.py --top 3 IMAGE          # how many classes to print (default 5)

It first checks every file of the bundle against manifest.json's digests (exit 2 naming the file that differs),
then applies exactly the preprocessing the model was calibrated and measured with: ``preprocess.py`` next to this
file implements preprocess.json's contract (resize the shorter side, centre crop, colour order,
``(pixel * scale - mean) / std`` per channel, HWC -> CHW). Port that module, not a guess of it: wrong normalisation
or an interleaved HWC layout keeps a desktop check green while on-device accuracy collapses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


class BundleError(ValueError):
    """The bundle or an input is unusable; the message names the file."""


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


def contract_module(folder: Path = HERE):
    """The bundle's own ``preprocess.py``, loaded by path (so it works from any working directory)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bundle_preprocess", folder / "preprocess.py")
    if spec is None or spec.loader is None or not (folder / "preprocess.py").is_file():
        raise BundleError("preprocess.py is missing from the bundle")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_inputs(folder: Path, spec: dict, argv: list[str]):
    """(feed by input name, a name per sample) from image files, one .npy or one .npz."""
    import numpy as np

    inputs = spec["inputs"]
    if len(argv) == 1 and argv[0].endswith(".npz"):
        with np.load(argv[0]) as f:
            missing = [t["name"] for t in inputs if t["name"] not in f.files]
            if missing:
                raise BundleError(f"{argv[0]} has no arrays {missing} (it has {sorted(f.files)})")
            feed = {t["name"]: f[t["name"]].astype(t["dtype"]) for t in inputs}
    elif len(argv) == 1 and argv[0].endswith(".npy"):
        feed = {inputs[0]["name"]: np.load(argv[0]).astype(inputs[0]["dtype"])}
    elif "layout" in spec:
        pre = contract_module(folder)
        rows = []
        for path in argv:
            try:
                rows.append(pre.preprocess_file(path, spec))
            except (OSError, ValueError, SyntaxError) as e:
                raise BundleError(f"{path} cannot be read as an image ({type(e).__name__}: {str(e)[:120]})") from None
        return {spec["input_name"]: np.stack(rows).astype(spec["dtype"])}, list(argv)
    else:
        raise BundleError("this model takes no image input: pass an .npz with one array per input")
    n = len(next(iter(feed.values())))
    return feed, [f"{argv[0]}[{i}]" for i in range(n)]


def classify(folder: Path, argv: list[str], top: int = 5) -> list[tuple[str, list[tuple[str, float]]]]:
    """Run the bundle's model on the inputs: per sample, its top classes as (name or index, probability)."""
    import numpy as np
    import onnxruntime as ort

    manifest = json.loads((folder / "manifest.json").read_text())
    spec = json.loads((folder / "preprocess.json").read_text())
    labels_file = folder / "labels.json"
    labels = json.loads(labels_file.read_text()) if labels_file.exists() else None
    feed, names = load_inputs(folder, spec, argv)
    # Whatever file the manifest names: model.onnx, or the target's format (model.ort).
    sess = ort.InferenceSession(str(folder / manifest["model"]["file"]), providers=["CPUExecutionProvider"])
    n = len(next(iter(feed.values())))
    # One sample at a time: a model exported with a fixed batch of 1 runs too.
    logits = np.concatenate([sess.run(None, {k: v[i:i + 1] for k, v in feed.items()})[0] for i in range(n)])
    rows = logits.reshape(n, -1).astype(np.float64)
    probs = np.exp(rows - rows.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    out = []
    for name, p in zip(names, probs):
        best = np.argsort(-p, kind="stable")[:top]
        out.append((name, [(labels[k] if labels else str(k), float(p[k])) for k in best]))
    return out


def format_results(results: list[tuple[str, list[tuple[str, float]]]]) -> list[str]:
    """One line per sample: ``photo.jpg: tabby (0.61), tiger cat (0.20), ...``."""
    return [f"{name}: " + ", ".join(f"{label} ({p:.3f})" for label, p in top) for name, top in results]


def main(argv: list[str] | None = None, folder: Path = HERE) -> int:
    """Verify the bundle, then print the top classes of each input. Exit 2 on a bad bundle or input."""
    import argparse

    p = argparse.ArgumentParser(prog="run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_NPY", help="image files, or one .npy / .npz of samples")
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)  # --help exits 0, a bad flag exits 2
    argv, top = args.inputs, args.top
    problem = verify_bundle(folder)
    try:
        if problem:
            raise BundleError(problem)
        lines = format_results(classify(folder, argv, top))
    except BundleError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
