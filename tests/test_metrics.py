"""Task metrics: hand-checked values, and cosine that stays right for tiny or zero outputs."""

from __future__ import annotations

import numpy as np
import pytest

from qcompile.steps.metrics import classification_fidelity, classification_scores, cosine_rows, fidelity, scores


def test_cosine_is_scale_invariant():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 10))
    for scale in (1e-30, 1e-6, 1.0, 1e20):
        assert cosine_rows(a * scale, a * scale) == pytest.approx(1.0)
        assert cosine_rows(a * scale, -a * scale) == pytest.approx(-1.0)
    # A naive cosine with an additive epsilon reads ~0 for identical tiny outputs.
    tiny = a * 1e-8
    naive = (tiny * tiny).sum(1) / (np.linalg.norm(tiny, axis=1) ** 2 + 1e-12)
    assert naive.max() < 0.01 and cosine_rows(tiny, tiny).min() == pytest.approx(1.0)


def test_cosine_of_zero_rows():
    z, x = np.zeros((1, 3)), np.ones((1, 3))
    assert cosine_rows(z, z)[0] == 1.0 and cosine_rows(z, x)[0] == 0.0


def test_classification_scores_hand_checked():
    out = np.array([[0.1, 0.9, 0.0, 0, 0, 0], [0.5, 0.1, 0.4, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]])
    labels = np.array([1, 2, 4])
    s = classification_scores(out, labels)
    # row 0 right; row 1 top-1 wrong (0) but 2 in its top-5; row 2's top-5 is 5, 0, 1, 2, 3 (ties break by the
    # lower index), so label 4 is outside it
    assert s["top1"] == pytest.approx(1 / 3) and s["top5"] == pytest.approx(2 / 3)


def test_fidelity_agreement_and_overlap():
    ref = np.array([[3.0, 2, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5]])
    out = np.array([[2.0, 3, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5]])
    f = classification_fidelity(ref, out)
    assert f["top1_agreement"] == 0.5 and f["top5_overlap"] == 1.0 and f["max_abs_diff"] == 1.0


def test_registry_by_task():
    out = np.eye(3)
    assert scores("classification", out, np.arange(3))["top1"] == 1.0
    assert scores("classification", out, None) is None
    assert scores("embedding", out, np.arange(3)) is None, "embeddings have no label metric"
    assert set(fidelity("embedding", out, out)) == {"cosine_mean", "cosine_min", "max_abs_diff"}
