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

Running this file runs the bundle's own code (this file and preprocess.py). ``qcompile run`` reuses its functions
with the installed preprocessing module instead (``classify(..., pre=)``) and never imports a bundle's Python.
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


def contract_module(folder: Path = HERE):
    """The bundle's own ``preprocess.py``, loaded by path (so it works from any working directory). Only this
    standalone runner calls it: importing it runs the bundle's code, which is what running run.py chooses."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bundle_preprocess", folder / "preprocess.py")
    if spec is None or spec.loader is None or not (folder / "preprocess.py").is_file():
        raise BundleError("preprocess.py is missing from the bundle")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_inputs(spec: dict, argv: list[str], pre):
    """(feed by input name, a name per sample) from image files (preprocessed by ``pre``, the module applying the
    contract), one .npy or one .npz. Arrays are loaded as data: pickled objects are refused."""
    import numpy as np

    inputs = spec["inputs"]
    if len(argv) == 1 and argv[0].endswith((".npz", ".npy")):
        wanted = inputs if argv[0].endswith(".npz") else inputs[:1]
        try:
            if argv[0].endswith(".npz"):
                with np.load(argv[0], allow_pickle=False) as f:
                    found = sorted(f.files)
                    arrays = {t["name"]: f[t["name"]] for t in wanted if t["name"] in found}
            else:
                arrays = {wanted[0]["name"]: np.load(argv[0], allow_pickle=False)}
        except (OSError, ValueError, EOFError) as e:  # ValueError: also what numpy says of a pickled object array
            raise BundleError(f"{argv[0]} cannot be read as arrays ({type(e).__name__}: {str(e)[:120]})") from None
        missing = [t["name"] for t in wanted if t["name"] not in arrays]
        if missing:
            raise BundleError(f"{argv[0]} has no arrays {missing} (it has {found})")
        try:
            feed = {t["name"]: arrays[t["name"]].astype(t["dtype"]) for t in wanted}
        except (ValueError, TypeError) as e:  # strings, say, where the model takes numbers
            raise BundleError(f"{argv[0]} holds arrays the model's dtypes cannot take ({str(e)[:120]})") from None
    elif "layout" in spec:
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


def read_json(folder: Path, name: str):
    """The parsed content of the bundle's file ``name``; ``BundleError`` naming it when it is not JSON."""
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"{name} cannot be read as JSON ({type(e).__name__}: {str(e)[:120]})") from None


def read_labels(folder: Path) -> list[str] | None:
    """labels.json's class names (a list of strings), or None when the bundle has none."""
    if not (folder / "labels.json").exists():
        return None
    labels = read_json(folder, "labels.json")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise BundleError("labels.json is not a list of class names")
    return labels


def classify(folder: Path, argv: list[str], top: int = 5, *, pre) -> list[tuple[str, list[tuple[str, float]]]]:
    """Run the bundle's model on the inputs: per sample, its top classes as (name or index, probability).

    ``pre`` is the module applying preprocess.json (preprocess.py): run.py passes the bundle's own copy,
    ``qcompile run`` the installed one. Its ``check_contract`` vets preprocess.json before any input is read."""
    import numpy as np
    import onnxruntime as ort

    manifest = read_json(folder, "manifest.json")
    spec = read_json(folder, "preprocess.json")
    try:
        spec = pre.check_contract(spec)
    except ValueError as e:  # preprocess.py's ContractError: the message starts with the key
        raise BundleError(f"preprocess.json: {e}") from None
    labels = read_labels(folder)
    feed, names = load_inputs(spec, argv, pre)
    # Whatever file the manifest names (verify_bundle held it to a flat name it lists): model.onnx, model.ort.
    model_file = manifest["model"]["file"]
    if model_file.endswith(".engine"):
        raise BundleError(f"{model_file} is a TensorRT engine: run it with TensorRT, not onnxruntime")
    try:
        sess = ort.InferenceSession(str(folder / model_file), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Exception types for a file it cannot load
        raise BundleError(f"{model_file} cannot be loaded by onnxruntime ({str(e)[:160]})") from None
    if set(feed) != {i.name for i in sess.get_inputs()}:
        raise BundleError(f"preprocess.json: inputs: {sorted(feed)} are not the inputs of {model_file}")
    n = len(next(iter(feed.values())))
    # One sample at a time: a model exported with a fixed batch of 1 runs too.
    logits = np.concatenate([sess.run(None, {k: v[i:i + 1] for k, v in feed.items()})[0] for i in range(n)])
    rows = logits.reshape(n, -1).astype(np.float64)
    probs = np.exp(rows - rows.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if labels and len(labels) < rows.shape[1]:
        raise BundleError(f"labels.json names {len(labels)} classes, the model gives {rows.shape[1]}")
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
        lines = format_results(classify(folder, argv, top, pre=contract_module(folder)))
    except BundleError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
