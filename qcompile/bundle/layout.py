"""What a deployment bundle holds, written as one deterministic zip.

``bundle.zip``: model.onnx, preprocess.json (the model's inputs; for an image input its layout, shape and
normalisation as trained), labels.json when the classes have names, manifest.json (file digests, inputs,
outputs, runtime) and run.py, a reference runner whose preprocessing is the one to port.

A sentence encoder's bundle (a model with a ``text`` port) holds tokenizer.json and text.json (how text becomes the
model's inputs, what its output means) in place of preprocess.json and preprocess.py, and its run.py is
``text_runner.py``: it takes sentences and prints their cosine similarities.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from ..signature import Signature
from .snippets import snippet_files

RUNNER = Path(__file__).with_name("runner.py")
TEXT_RUNNER = Path(__file__).with_name("text_runner.py")
PREPROCESS = Path(__file__).with_name("preprocess.py")  # run.py imports it: the one implementation of the contract


def preprocess_spec(signature: Signature, contract: dict[str, Any] | None) -> dict[str, Any]:
    """``preprocess.json``: every input's name, dtype and shape; for a single image input, the model's whole
    preprocessing contract (``contract``, the model's ``preprocess`` port), as ``preprocess.py`` applies it."""
    from .preprocess import describe

    spec: dict[str, Any] = {"inputs": [t.model_dump(mode="json") for t in signature.inputs]}
    image = signature.single_image_input
    if image is not None:
        c = dict(contract or {})
        if c and "normalize" not in c:  # the older form of the port: normalisation only
            c = {"normalize": c}
        shape = list(image.sample_shape)
        spec.update({"layout": c.get("layout") or "NCHW", "dtype": image.dtype, "input_name": image.name,
                     "input_shape": shape, "normalize": c.get("normalize"),
                     "color": c.get("color") or ("L" if shape[0] == 1 else "RGB"), "resize": c.get("resize"),
                     "crop": c.get("crop"), "interpolation": c.get("interpolation") or "bilinear",
                     "formula": "(pixel * scale - mean[c]) / std[c], HWC image -> CHW tensor, batch axis first"})
        spec["steps"] = describe(spec)
    return spec


def _entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    # A fixed timestamp keeps the zip's bytes (and digest) equal for equal content.
    # Model weights barely compress (24 -> 22.5 MiB for ResNet-50 INT8) at a second of CPU per build: stored as is.
    method = zipfile.ZIP_STORED if len(data) > 1 << 20 else zipfile.ZIP_DEFLATED
    zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=method)


def write_bundle(dest: Path, model_bytes: bytes, signature: Signature, normalize: dict[str, Any] | None,
                 labels: list[str] | None, model_info: dict[str, Any], runtime: dict[str, Any],
                 model_file: str = "model.onnx", extra_files: dict[str, bytes] | None = None,
                 app_snippets: bool = False, text: dict[str, Any] | None = None,
                 tokenizer: bytes | None = None) -> list[str]:
    """Write the bundle zip to ``dest``; return the names of the files in it.

    ``model_file`` names what the target runs (``model.ort``, ``model.engine``); ``extra_files`` are the
    target's side files (operator configs, a trtexec line); ``app_snippets`` adds Kotlin and Swift code applying
    preprocess.json's contract (for a single image input). ``text`` (the model's text port) and ``tokenizer`` (the
    bytes of its tokenizer file) make a sentence encoder's bundle; ``TokenizerFileError`` when those bytes are not a
    tokenizer.json."""
    if text is not None:
        from .text import text_spec

        spec = text_spec(text, tokenizer or b"")
        files = {model_file: model_bytes, "text.json": json.dumps(spec, indent=2).encode(),
                 "tokenizer.json": tokenizer or b"", "run.py": TEXT_RUNNER.read_bytes(), **(extra_files or {})}
    else:
        spec = preprocess_spec(signature, normalize)
        files = {model_file: model_bytes,
                 "preprocess.json": json.dumps(spec, indent=2).encode(),
                 "run.py": RUNNER.read_bytes(), "preprocess.py": PREPROCESS.read_bytes(), **(extra_files or {})}
    if app_snippets:
        files.update(snippet_files(spec))
    if labels:
        files["labels.json"] = json.dumps(labels, indent=1).encode()
    manifest = {
        "model": {"file": model_file, "inputs": signature.input_names,
                  "outputs": [t.name for t in signature.outputs], "task": signature.task, **model_info},
        "runtime": runtime,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    files["manifest.json"] = json.dumps(manifest, indent=2).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(files):
            _entry(zf, name, files[name])
    dest.write_bytes(buf.getvalue())
    return sorted(files)
