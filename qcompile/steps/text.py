"""The ``data.text`` step: text files read, split and tokenized by the model's tokenizer into the calibration and
evaluation samples, with the human-scored pairs of the evaluation texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bundle.text import PAD_TOKENS
from ..errors import BadInput
from ..kinds.data.text import TextParams
from .arrays import save_samples
from .base import Step, StepContext, register
from .data import split


def read_lines(path: Path, encoding: str, key: str, keep_empty: bool = False) -> list[str]:
    """The file's lines, stripped (empty ones dropped unless ``keep_empty``); bad input naming the key when the
    file does not decode."""
    try:
        lines = [ln.strip() for ln in path.read_text(encoding=encoding).splitlines()]
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not {encoding} text ({e.reason} at byte {e.start}; set data.encoding)",
                       key=key) from None
    return lines if keep_empty else [ln for ln in lines if ln]


def matrix_pairs(path: Path, n: int) -> list[tuple[int, int, float]]:
    """The pairs above the diagonal of a square score matrix over ``n`` texts."""
    import numpy as np

    rows = [ln.split() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    for i, row in enumerate(rows, 1):
        for cell in row:
            try:
                float(cell)
            except ValueError:
                raise BadInput(f"{path} line {i}: score {cell[:20]!r} is not a number", key="data.scores") from None
    if len(rows) != n or any(len(r) != n for r in rows):
        raise BadInput(f"{path} must be a {n}x{n} matrix (one row and column per line of data.texts); it has "
                       f"{len(rows)} rows of {sorted({len(r) for r in rows})} values", key="data.scores")
    m = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(m).all():
        raise BadInput(f"{path} holds NaN or infinite scores", key="data.scores")
    return [(i, j, float(m[i, j])) for i in range(n) for j in range(i + 1, n)]


def file_pairs(path: Path, encoding: str) -> tuple[list[str], list[tuple[int, int, float]]]:
    """The distinct texts of a text<TAB>text<TAB>score file and its pairs as indices into them."""
    import math

    texts: dict[str, int] = {}
    pairs = []
    for i, line in enumerate(read_lines(path, encoding, "data.pairs"), 1):
        parts = line.split("\t")
        if len(parts) != 3:
            raise BadInput(f"{path} line {i}: expected text<TAB>text<TAB>score, found {len(parts)} field(s)",
                           key="data.pairs")
        try:
            score = float(parts[2])
        except ValueError:
            raise BadInput(f"{path} line {i}: score {parts[2][:20]!r} is not a number", key="data.pairs") from None
        if not math.isfinite(score):
            raise BadInput(f"{path} line {i}: score {parts[2]!r} is not finite", key="data.pairs")
        a, b = (texts.setdefault(t.strip(), len(texts)) for t in parts[:2])
        pairs.append((a, b, score))
    if not pairs:
        raise BadInput(f"{path} holds no pairs", key="data.pairs")
    return list(texts), pairs


def tokenize(tokenizer: str, texts: list[str], names: tuple[str, ...], max_length: int) -> dict[str, Any]:
    """Token arrays by input name, each text truncated to ``max_length`` and padded to the longest of ``texts``."""
    import numpy as np
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(tokenizer)
    except Exception as e:  # tokenizers raises its own Exception type on a malformed file
        raise BadInput(f"{tokenizer} is not a tokenizer the tokenizers library reads ({str(e)[:120]})",
                       key="model.path") from None
    tok.no_padding()  # the file's own padding (MiniLM's pads every text to 128) gives way to the batch's longest
    tok.enable_truncation(max_length)
    # The bundle's text.json states the same pad id (qcompile.bundle.text), so deployment feeds what was measured.
    pad = next((tok.token_to_id(t) for t in PAD_TOKENS if tok.token_to_id(t) is not None), 0)
    encodings = tok.encode_batch(texts)
    width = max([len(e.ids) for e in encodings] + [2])
    arrays = {"input_ids": np.full((len(texts), width), pad, np.int64),
              "attention_mask": np.zeros((len(texts), width), np.int64),
              "token_type_ids": np.zeros((len(texts), width), np.int64)}
    for row, e in enumerate(encodings):
        n = len(e.ids)
        arrays["input_ids"][row, :n] = e.ids
        arrays["attention_mask"][row, :n] = e.attention_mask
        arrays["token_type_ids"][row, :n] = e.type_ids
    missing = [n for n in names if n not in arrays]
    if missing:
        raise BadInput(f"the model takes {missing}, which a tokenizer does not produce", key="data.kind")
    return {n: arrays[n] for n in names}


@register
class TextDataStep(Step):
    """Reads the text files, draws calibration text disjoint from the evaluation text, and tokenizes both."""

    kind = "data.text"
    Params = TextParams
    outputs = {"calib": "calib.npz", "eval": "eval.npz"}
    libraries = ("numpy", "tokenizers")
    file_fields = ("data.texts", "data.scores", "data.pairs", "data.calibration", "tokenizer")

    def preflight(self, p: TextParams) -> None:
        self._read(p)

    def _read(self, p: TextParams) -> tuple[list[str], list[tuple[int, int, float]] | None, list[str]]:
        """(evaluation texts, scored pairs or None, calibration texts)."""
        d = p.data
        if d.pairs is not None:
            texts, pairs = file_pairs(d.pairs, d.encoding)
        else:
            texts = read_lines(d.texts, d.encoding, "data.texts", keep_empty=d.scores is not None)
            if d.scores is not None and not all(texts):
                raise BadInput(f"{d.texts} has empty lines, which data.scores would still score",
                               key="data.texts")
            pairs = matrix_pairs(d.scores, len(texts)) if d.scores is not None else None
        if not texts:
            raise BadInput(f"{d.texts or d.pairs} holds no text", key="data.texts" if d.texts else "data.pairs")
        if d.calibration is None:
            if d.eval_samples + p.calib_samples > len(texts):
                raise BadInput(f"{d.texts} holds {len(texts)} texts; data.eval_samples={d.eval_samples} plus "
                               f"quant.calibration.samples={p.calib_samples} need {d.eval_samples + p.calib_samples}",
                               key="data.eval_samples")
            return texts, None, []
        seen = set(texts)
        calib = [t for t in read_lines(d.calibration, d.encoding, "data.calibration") if t not in seen]
        if len(calib) < p.calib_samples:
            raise BadInput(f"{d.calibration} holds {len(calib)} texts not in the evaluation set; "
                           f"quant.calibration.samples={p.calib_samples} asks more", key="quant.calibration.samples")
        return texts, pairs, calib

    def run(self, ctx: StepContext, p: TextParams) -> dict[str, Any]:
        import numpy as np

        texts, pairs, calib = self._read(p)
        if p.data.calibration is None:
            eval_idx, _, calib_idx = split(len(texts), p.data.eval_samples, p.calib_samples, p.data.seed)
            evals, calib = [texts[i] for i in eval_idx], [texts[i] for i in calib_idx]
        else:
            evals = texts
            order = np.random.default_rng(p.data.seed).permutation(len(calib))[:p.calib_samples]
            calib = [calib[i] for i in sorted(order)]
        result: dict[str, Any] = {}
        for name, split_texts in (("eval", evals), ("calib", calib)):
            arrays = tokenize(p.tokenizer, split_texts, p.inputs, p.max_length) if split_texts else \
                {n: np.zeros((0, 2), np.int64) for n in p.inputs}
            lengths = arrays["input_ids"].shape[1] if split_texts else 0
            save_samples(ctx.out(name), arrays, pairs=np.asarray(pairs) if name == "eval" and pairs else None)
            tokens = arrays["attention_mask"].sum(axis=1) if "attention_mask" in arrays else np.zeros(0)
            result[name] = {"texts": len(split_texts), "padded_to": lengths,
                            "truncated": int((tokens >= p.max_length).sum()),
                            "tokens_mean": round(float(tokens.mean()), 1) if len(tokens) else 0}
        result["pairs"] = len(pairs) if pairs else 0
        if result["eval"]["truncated"]:
            ctx.note(f"{result['eval']['truncated']} of {len(evals)} evaluation texts were cut at "
                     f"{p.max_length} tokens (data.max_length)")
        return result
