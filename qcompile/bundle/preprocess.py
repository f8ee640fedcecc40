"""The preprocessing contract, applied: one image -> the model's input tensor, with numpy and Pillow only.

This one module is used by qcompile's image data steps (calibration and evaluation samples) and, as installed, by
``qcompile run``; a copy ships inside every deployment bundle next to ``run.py`` for the app-side port and the
standalone runner, so what the model was calibrated and measured on is exactly what the bundle feeds it.
``qcompile run`` never imports a bundle's copy: a bundle is data to it, and ``check_contract`` refuses a
preprocess.json this module cannot apply as written. It imports nothing from qcompile.

The contract (``preprocess.json`` holds these keys)::

    input_shape    [C, H, W]            the model's image input after the batch axis
    layout         "NCHW"               channels first, batch axis added by the caller
    color          "RGB" | "BGR" | "L"  channel order (L: one grey channel)
    resize         int | null           resize so the SHORTER side is this many pixels, keeping the aspect ratio
    crop           [h, w] | null        centre crop after the resize (null with a resize: crop to H, W)
    interpolation  "bilinear" | "bicubic" | "nearest" | "lanczos" | "box" | "hamming"   (Pillow, antialiased)
    normalize      {scale, mean, std}   (pixel * scale - mean[c]) / std[c] per channel, or null: raw pixels

With neither resize nor crop, the image is resized straight to (H, W), ignoring its aspect ratio. The order is
the one torchvision's ``ImageClassification`` transform uses (resize shorter side, centre crop, to float, normalise),
and a test checks the output against it on real photos.
"""

from __future__ import annotations

from typing import Any

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
COLORS = ("RGB", "BGR", "L")
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "int8", "bool")  # a model signature's element types
# Every key preprocess.json may hold. formula and steps are prose for whoever ports the contract: nothing reads them.
KEYS = ("inputs", "layout", "dtype", "input_name", "input_shape", "normalize", "color", "resize", "crop",
        "interpolation", "formula", "steps")


class ContractError(ValueError):
    """preprocess.json says something this module cannot apply as written; the message starts with the key."""


def open_image(source: Any):
    """A decoded Pillow image from a path or a binary file object; raises what Pillow raises on a bad file."""
    from PIL import Image

    img = Image.open(source)
    img.load()  # decode now, so a truncated file fails here and not half-way through a batch
    return img


def _resample(name: str):
    from PIL import Image

    if name not in INTERPOLATIONS:
        raise ValueError(f"interpolation {name!r} is not one of {INTERPOLATIONS}")
    return getattr(Image.Resampling, name.upper())


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``shorter`` (torchvision's rounding: truncate)."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def center_crop_box(width: int, height: int, crop_h: int, crop_w: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a centre crop; outside the image Pillow fills black, as torchvision pads."""
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return left, top, left + crop_w, top + crop_h


def geometry(img, spec: dict):
    """Resize and crop ``img`` (a Pillow image) as the contract says; the result is (W, H) of the input shape."""
    _, h, w = spec["input_shape"]
    resample = _resample(spec.get("interpolation") or "bilinear")
    resize, crop = spec.get("resize"), spec.get("crop")
    if resize is None and crop is None:
        return img.resize((w, h), resample) if img.size != (w, h) else img
    if resize is not None:
        size = resized_size(img.width, img.height, int(resize))
        if size != img.size:
            img = img.resize(size, resample)
    ch, cw = (crop if crop is not None else (h, w))
    if (cw, ch) != img.size:
        img = img.crop(center_crop_box(img.width, img.height, ch, cw))
    if img.size != (w, h):
        raise ValueError(f"after resize {resize} and crop {crop} the image is {img.size[0]}x{img.size[1]}, the model "
                         f"takes {w}x{h}")
    return img


def to_tensor(img, spec: dict):
    """A colour-converted, resized Pillow image -> a float32 array in the contract's layout (C, H, W)."""
    import numpy as np

    c, h, w = spec["input_shape"]
    x = np.asarray(img, dtype=np.float32).reshape(h, w, -1)  # HWC, as images are stored
    if x.shape[2] != c:
        raise ValueError(f"the image has {x.shape[2]} channels, the model takes {c}")
    if spec.get("color") == "BGR":
        x = x[..., ::-1]
    norm = spec.get("normalize")
    if norm:
        mean = np.asarray(norm["mean"], np.float32)
        std = np.asarray(norm["std"], np.float32)
        x = (x * np.float32(norm["scale"]) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)  # CHW, as the model takes it


def color_mode(spec: dict) -> str:
    """The Pillow mode images are converted to: ``L`` for one channel, else ``RGB`` (BGR is RGB reversed later)."""
    color = spec.get("color") or ("L" if spec["input_shape"][0] == 1 else "RGB")
    if color not in COLORS:
        raise ValueError(f"color {color!r} is not one of {COLORS}")
    return "L" if color == "L" else "RGB"


def preprocess_image(img, spec: dict):
    """One Pillow image -> the model's (C, H, W) float32 input, exactly as the contract ``spec`` says."""
    img = img.convert(color_mode(spec)) if img.mode != color_mode(spec) else img
    return to_tensor(geometry(img, spec), spec)


def preprocess_file(path: Any, spec: dict):
    """One image file -> the model's (C, H, W) float32 input."""
    return preprocess_image(open_image(path), spec)


def describe(spec: dict) -> list[str]:
    """The contract as ordered, human-readable steps (for preprocess.json and reports)."""
    c, h, w = spec["input_shape"]
    steps = [f"decode the image and convert it to {spec.get('color') or ('L' if c == 1 else 'RGB')}"]
    interp = spec.get("interpolation") or "bilinear"
    if spec.get("resize") is None and spec.get("crop") is None:
        steps.append(f"resize to {w}x{h} ({interp}, aspect ratio not kept)")
    else:
        if spec.get("resize") is not None:
            steps.append(f"resize so the shorter side is {spec['resize']} ({interp}, antialiased, aspect ratio kept)")
        ch, cw = spec.get("crop") or (h, w)
        steps.append(f"centre crop {cw}x{ch}")
    norm = spec.get("normalize")
    if norm:
        steps.append(f"x = (pixel * {norm['scale']:.10g} - mean[c]) / std[c], mean={norm['mean']}, std={norm['std']}")
    else:
        steps.append("x = pixel (0..255 floats, no normalisation)")
    steps.append("HWC -> CHW, then add the batch axis: NCHW float32")
    return steps


def _positive_ints(value: Any, n: int) -> bool:
    return (isinstance(value, list) and len(value) == n
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def _numbers(value: Any) -> bool:
    import math

    return (isinstance(value, list) and len(value) > 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def _check_inputs(inputs: Any) -> None:
    if not isinstance(inputs, list) or not inputs:
        raise ContractError("inputs: not a list of the model's inputs")
    for i, t in enumerate(inputs):
        if not isinstance(t, dict) or set(t) != {"name", "dtype", "shape"}:
            raise ContractError(f"inputs[{i}]: not an object of exactly name, dtype and shape")
        if not isinstance(t["name"], str) or t["dtype"] not in DTYPES or not isinstance(t["shape"], list):
            raise ContractError(f"inputs[{i}]: name must be a string, dtype one of {', '.join(DTYPES)}, shape a list")


def _check_normalize(norm: Any, channels: int) -> None:
    import math

    if norm is None:
        return
    if not isinstance(norm, dict) or set(norm) != {"scale", "mean", "std"}:
        raise ContractError("normalize: not null nor an object of exactly scale, mean and std")
    scale = norm["scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ContractError(f"normalize.scale: {scale!r} is not a number > 0")
    for key in ("mean", "std"):
        if not _numbers(norm[key]) or len(norm[key]) not in (1, channels):
            raise ContractError(f"normalize.{key}: not a list of 1 or {channels} finite numbers")
    if any(v <= 0 for v in norm["std"]):
        raise ContractError(f"normalize.std: {norm['std']} holds a value <= 0")


def check_contract(spec: Any) -> dict:
    """``spec`` (a parsed preprocess.json) when every key is one this module knows and every value one it can
    apply; else ``ContractError`` naming the first key at fault. The bundle's runners call it before preprocessing
    anything, so a crafted or damaged file is refused rather than half-applied."""
    if not isinstance(spec, dict):
        raise ContractError("(top level): not a JSON object")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise ContractError(f"{unknown[0]}: not a setting of the preprocessing contract (known: {', '.join(KEYS)})")
    _check_inputs(spec.get("inputs"))
    if "layout" not in spec:  # no image input: samples are fed as arrays, nothing here is applied
        return spec
    if spec["layout"] != "NCHW":
        raise ContractError(f"layout: {spec['layout']!r} is not NCHW, the one layout this module writes")
    if not _positive_ints(spec.get("input_shape"), 3):
        raise ContractError(f"input_shape: {spec.get('input_shape')!r} is not [C, H, W] of positive integers")
    if spec.get("input_name") not in [t["name"] for t in spec["inputs"]]:
        raise ContractError(f"input_name: {spec.get('input_name')!r} is not one of the inputs' names")
    if spec.get("dtype") not in ("float32", "float16"):
        raise ContractError(f"dtype: {spec.get('dtype')!r} is not float32 nor float16")
    channels = spec["input_shape"][0]
    color = spec.get("color")
    if color is not None and (color not in COLORS or (color == "L") != (channels == 1)):
        raise ContractError(f"color: {color!r} is not one of {', '.join(COLORS)} fitting {channels} channels")
    if spec.get("interpolation") is not None and spec["interpolation"] not in INTERPOLATIONS:
        raise ContractError(f"interpolation: {spec['interpolation']!r} is not one of {', '.join(INTERPOLATIONS)}")
    if spec.get("resize") is not None and not _positive_ints([spec["resize"]], 1):
        raise ContractError(f"resize: {spec['resize']!r} is not null nor a positive integer")
    if spec.get("crop") is not None and not _positive_ints(spec["crop"], 2):
        raise ContractError(f"crop: {spec['crop']!r} is not null nor [h, w] of positive integers")
    _check_normalize(spec.get("normalize"), channels)
    if not isinstance(spec.get("formula", ""), str) or not isinstance(spec.get("steps", []), list):
        raise ContractError("formula, steps: prose (a string, a list of strings) expected")
    return spec
