"""The deployment bundle: the quantized model with everything an app needs to call it correctly.

``bundle.zip`` holds model.onnx, preprocess.json (layout, shape, normalisation as trained), labels.json when
the classes have names, manifest.json (file digests, input and output names, runtime) and run.py, a reference
runner whose preprocessing is the one to port.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from .base import Step, StepContext, StepParams, register


class BundleParams(StepParams):
    input_shape: tuple[int, ...]
    normalize: dict[str, Any] | None
    labels: list[str] | None
    quantization: dict[str, Any]


def _entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    # A fixed timestamp keeps the zip's bytes (and digest) equal for equal content.
    zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=zipfile.ZIP_DEFLATED)


@register
class Bundle(Step):
    """Packs the quantized model, its preprocessing contract, labels, a manifest and a reference runner."""

    kind = "package.bundle"
    version = 1
    Params = BundleParams
    inputs = ("model",)
    outputs = {"bundle": "bundle.zip"}
    libraries = ("onnx", "onnxruntime")

    def run(self, ctx: StepContext, p: BundleParams) -> dict[str, Any]:
        import onnx
        import onnxruntime

        model_bytes = Path(ctx.inputs["model"]).read_bytes()
        proto = onnx.load_from_string(model_bytes)
        init = {t.name for t in proto.graph.initializer}
        io_names = {"inputs": [i.name for i in proto.graph.input if i.name not in init],
                    "outputs": [o.name for o in proto.graph.output]}
        preprocess = {"layout": "NCHW", "dtype": "float32", "input_name": io_names["inputs"][0],
                      "input_shape": list(p.input_shape), "normalize": p.normalize,
                      "formula": "(pixel * scale - mean[c]) / std[c], HWC image -> CHW tensor, batch axis first"}
        files = {"model.onnx": model_bytes,
                 "preprocess.json": json.dumps(preprocess, indent=2).encode(),
                 "run.py": (Path(__file__).parent.parent / "runner.py").read_bytes()}
        if p.labels:
            files["labels.json"] = json.dumps(p.labels, indent=1).encode()
        opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
        manifest = {
            "model": {"file": "model.onnx", **io_names, "opset": opset, "quantization": p.quantization},
            "runtime": {"onnxruntime": f">={onnxruntime.__version__}", "providers": ["CPUExecutionProvider"]},
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
        }
        files["manifest.json"] = json.dumps(manifest, indent=2).encode()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name in sorted(files):
                _entry(zf, name, files[name])
        ctx.out("bundle").write_bytes(buf.getvalue())
        return {"files": sorted(files), "has_labels": bool(p.labels), "normalized": p.normalize is not None}
