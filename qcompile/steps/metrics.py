"""Metrics per task, pure numpy: what one variant scores on labelled data, and how close a variant's outputs are
to the reference's. The signature's task picks the functions; gates read their names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # numpy is imported where used: a fully cached build never loads it
    import numpy as np


def _rows(out: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.asarray(out, dtype=np.float64).reshape(len(out), -1)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity, scale-invariant: each row is divided by its largest magnitude first, so tiny
    outputs (1e-20) neither underflow nor drown in an epsilon. Two all-zero rows count as identical (1.0), one
    all-zero row against a non-zero one as 0.0."""
    import numpy as np

    a, b = _rows(a), _rows(b)

    def unit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        peak = np.abs(x).max(axis=1, keepdims=True)
        zero = peak[:, 0] == 0
        x = x / np.where(peak == 0, 1.0, peak)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm == 0, 1.0, norm), zero

    ua, za = unit(a)
    ub, zb = unit(b)
    cos = (ua * ub).sum(axis=1)
    cos = np.where(za & zb, 1.0, np.where(za | zb, 0.0, cos))
    return np.clip(cos, -1.0, 1.0)


def _topk(out: np.ndarray, k: int) -> np.ndarray:
    import numpy as np

    rows = _rows(out)
    k = min(k, rows.shape[1])
    return np.argsort(-rows, axis=1, kind="stable")[:, :k]


def classification_scores(out: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy against integer labels."""
    top = _topk(out, 5)
    return {"top1": float((top[:, 0] == labels).mean()), "top5": float((top == labels[:, None]).any(axis=1).mean())}


def classification_fidelity(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Agreement with the reference: top-1 agreement, top-5 overlap, output cosine, max abs difference."""
    import numpy as np

    tr, to = _topk(ref, 5), _topk(out, 5)
    overlap = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(tr, to)])
    cos = cosine_rows(ref, out)
    return {"top1_agreement": float((tr[:, 0] == to[:, 0]).mean()), "top5_overlap": float(overlap),
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "max_abs_diff": float(np.abs(_rows(ref) - _rows(out)).max())}


def embedding_fidelity(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Closeness of embeddings: cosine per sample and the max abs difference."""
    import numpy as np

    cos = cosine_rows(ref, out)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "max_abs_diff": float(np.abs(_rows(ref) - _rows(out)).max())}


def other_fidelity(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Closeness of any outputs to FP32's. Rows one value wide (a regression's prediction) have no direction of
    their own, so their cosine is taken over the whole column rather than per row (where it would only say whether
    the signs agree)."""
    import numpy as np

    if _rows(ref).shape[1] > 1:
        return embedding_fidelity(ref, out)
    cos = float(cosine_rows(_rows(ref).reshape(1, -1), _rows(out).reshape(1, -1))[0])
    diff = np.abs(_rows(ref) - _rows(out))
    return {"cosine_mean": cos, "cosine_min": cos, "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean())}


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank (what Spearman's correlation needs)."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    if len(values) < len(x):  # average the ranks within each group of ties
        sums = np.bincount(inverse, weights=r)
        r = (sums / np.bincount(inverse))[inverse]
    return r


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation (NaN when either side is constant)."""
    import numpy as np

    a, b = np.asarray(a, np.float64) - np.mean(a), np.asarray(b, np.float64) - np.mean(b)
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def similarity_scores(emb: np.ndarray, pairs: np.ndarray) -> dict[str, float]:
    """How well embedding cosine ranks pairs as people scored them: Spearman's and Pearson's correlation of each
    pair's cosine with its human score (rows of ``pairs``: index a, index b, score)."""
    import numpy as np

    a, b = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    rows = _rows(emb)
    cos = cosine_rows(rows[a], rows[b])
    return {"spearman": pearson(ranks(cos), ranks(pairs[:, 2])), "pearson": pearson(cos, pairs[:, 2])}


# What each task can measure: scores need labels (or scored pairs); fidelity needs only the reference's outputs.
MEASURES = {"classification": ({"top1", "top5"}, {"top1_agreement", "top5_overlap", "cosine_mean", "cosine_min",
                                                  "max_abs_diff"}),
            "embedding": ({"spearman", "pearson"}, {"cosine_mean", "cosine_min", "max_abs_diff"}),
            "other": (set(), {"cosine_mean", "cosine_min", "max_abs_diff", "mean_abs_diff"})}

# task -> fidelity to the reference
TASKS: dict[str, Callable[..., dict[str, float]]] = {
    "classification": classification_fidelity,
    "embedding": embedding_fidelity,
    "other": other_fidelity,  # no built-in score: closeness to FP32, and eval.metrics
}


def scores(task: str, out: np.ndarray, labels: np.ndarray | None,
           pairs: np.ndarray | None = None) -> dict[str, Any] | None:
    """The task's scores of one variant: top-1/top-5 of a classifier against labels, Spearman/Pearson of an
    embedding model against scored pairs; None without them."""
    if task == "classification" and labels is not None:
        got = classification_scores(out, labels)
    elif task == "embedding" and pairs is not None and len(pairs):
        got = similarity_scores(out, pairs)
    else:
        return None
    return {k: round(v, 6) for k, v in got.items()}


def fidelity(task: str, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """The task's fidelity metrics of ``out`` against the reference outputs."""
    return {k: round(v, 6) for k, v in TASKS[task](ref, out).items()}
