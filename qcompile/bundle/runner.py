"""Reference runner shipped as ``run.py`` in every deployment bundle. Standalone: numpy, onnxruntime, Pillow.

    python run.py IMAGE [IMAGE ...]      # image files, for a one-image-input model (resized as preprocess.json says)
    python run.py SAMPLES.npy            # already-preprocessed samples of the model's single input, batch first
    python run.py SAMPLES.npz            # one array per input name, batch first (models with several inputs)

It applies exactly the preprocessing the model was trained with (preprocess.json): resize, colour mode,
``(pixel * scale - mean) / std`` per channel, and HWC -> CHW. Port this function, not a guess of it: wrong
normalisation or an interleaved HWC layout keeps a desktop check green while on-device accuracy collapses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def preprocess(image_path: str | Path, spec: dict) -> np.ndarray:
    """One image file -> a (C, H, W) float32 array, as the model was trained."""
    from PIL import Image

    c, h, w = spec["input_shape"]
    img = Image.open(image_path).convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32).reshape(h, w, c)  # HWC, as images are stored
    norm = spec.get("normalize")
    if norm:
        x = (x * norm["scale"] - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # CHW, as the model takes it


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


def main(argv: list[str] | None = None) -> int:
    """Print the top-5 classes of each input."""
    import onnxruntime as ort

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    problem = verify_bundle()
    if problem:
        print(f"run.py: {problem}", file=sys.stderr)
        return 2
    spec = json.loads((HERE / "preprocess.json").read_text())
    labels_file = HERE / "labels.json"
    labels = json.loads(labels_file.read_text()) if labels_file.exists() else None
    sess = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = spec["inputs"]
    if len(argv) == 1 and argv[0].endswith(".npz"):
        with np.load(argv[0]) as f:
            feed, names = {t["name"]: f[t["name"]].astype(t["dtype"]) for t in inputs}, None
    elif len(argv) == 1 and argv[0].endswith(".npy"):
        feed, names = {inputs[0]["name"]: np.load(argv[0]).astype(inputs[0]["dtype"])}, None
    elif "layout" in spec:
        feed, names = {spec["input_name"]: np.stack([preprocess(p, spec) for p in argv])}, argv
    else:
        print("this model takes no image input: pass an .npz with one array per input", file=sys.stderr)
        return 2
    n = len(next(iter(feed.values())))
    logits = np.concatenate([sess.run(None, {k: v[i:i + 1] for k, v in feed.items()})[0] for i in range(n)])
    for i, row in enumerate(logits.reshape(n, -1)):
        top = np.argsort(row)[::-1][:5]
        shown = ", ".join(f"{labels[k] if labels else k} ({row[k]:.2f})" for k in top)
        print(f"{names[i] if names else i}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
