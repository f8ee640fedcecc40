"""The text contract of a sentence encoder's bundle: ``text.json``, written from the model's ``text`` port and the
bytes of its ``tokenizer.json``.

It says everything an app needs to turn sentences into the model's inputs exactly as qcompile's data step did for
calibration and evaluation (``qcompile.steps.text.tokenize``; a test holds the two equal), and what the output
means. ``text_runner.py`` (the bundle's ``run.py``) applies it. Read at package time only: nothing here ships.
"""

from __future__ import annotations

import json
from typing import Any

# Which tokenizers ``Encoding`` attribute fills each model input; padding fills pad_id in input_ids, 0 elsewhere.
ENCODING_FIELDS = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask"}
# The pad tokens qcompile's data step looks up (after dropping the tokenizer file's own padding), in this order.
PAD_TOKENS = ("[PAD]", "<pad>")
# The data step pads every batch to at least two positions; the bundle does the same so its inputs are the same.
MIN_LENGTH = 2


class TokenizerFileError(ValueError):
    """tokenizer.json is not the JSON a tokenizers ``Tokenizer`` is saved as."""


def token_id(tokenizer: dict[str, Any], token: str) -> int | None:
    """The id of ``token`` in a parsed tokenizer.json, as ``Tokenizer.token_to_id`` finds it (added tokens first,
    then the model's vocabulary), or None. Parsed by hand so packaging needs no tokenizers library."""
    for added in tokenizer.get("added_tokens") or []:
        if added.get("content") == token:
            return int(added["id"])
    vocab = (tokenizer.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):  # WordPiece, BPE, WordLevel: token -> id
        found = vocab.get(token)
        return None if found is None else int(found)
    if isinstance(vocab, list):  # Unigram: [piece, score] rows, the id is the row
        return next((i for i, row in enumerate(vocab) if row and row[0] == token), None)
    return None


def pad_token(tokenizer: dict[str, Any]) -> tuple[str | None, int]:
    """(pad token, its id) as the data step resolves it: the first of ``PAD_TOKENS`` the tokenizer knows, else id 0.

    The tokenizer file's own padding section is not read: the data step replaces it (``no_padding``) before it
    looks the pad id up, and the bundle must feed what calibration and evaluation fed."""
    for token in PAD_TOKENS:
        found = token_id(tokenizer, token)
        if found is not None:
            return token, found
    return None, 0


def text_spec(contract: dict[str, Any], tokenizer_bytes: bytes) -> dict[str, Any]:
    """``text.json`` for the model's ``text`` port ``contract`` and the bytes of its tokenizer file.

    Raises ``TokenizerFileError`` when the bytes are not a tokenizer.json."""
    try:
        tokenizer = json.loads(tokenizer_bytes)
        if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("model"), dict):
            raise ValueError("no model section")
    except (ValueError, UnicodeDecodeError) as e:
        raise TokenizerFileError(f"not a tokenizers tokenizer.json ({str(e)[:120]})") from None
    names = list(contract["inputs"])
    unknown = [n for n in names if n not in ENCODING_FIELDS]
    if unknown:
        raise TokenizerFileError(f"the model takes {unknown}, which a tokenizer does not produce")
    token, pad_id = pad_token(tokenizer)
    pooling, normalize = contract["pooling"], bool(contract["normalize"])
    pooled = pooling != "none"
    max_length = int(contract["max_length"])
    return {
        "tokenizer": "tokenizer.json",
        "inputs": names,
        "input_dtype": "int64",
        "input_shape": ["batch", "sequence"],
        "encoding_fields": {n: ENCODING_FIELDS[n] for n in names},
        "max_length": max_length,
        "max_positions": int(contract["max_positions"]),
        "truncation": {"max_length": max_length, "strategy": "longest_first", "direction": "right", "stride": 0},
        "padding": {"to": "longest in batch", "min_length": MIN_LENGTH, "direction": "right", "pad_id": pad_id,
                    "pad_token": token, "attention_mask": 0, "token_type_ids": 0},
        "pooling": pooling,
        "normalize": normalize,
        "hidden_size": contract.get("hidden_size"),
        "output": {"name": contract["output"],
                   "shape": ["batch", contract.get("hidden_size") or "hidden"] if pooled else
                   ["batch", "sequence", contract.get("hidden_size") or "hidden"],
                   "meaning": _meaning(pooling, normalize)},
        "similarity": "cosine" if pooled else None,
        "steps": describe(names, max_length, pad_id, token, pooling, normalize),
    }


def _meaning(pooling: str, normalize: bool) -> str:
    if pooling == "none":
        return "one embedding per token (padding positions included; drop them with the attention mask)"
    how = {"mean": "the mean of the token embeddings over the attention mask",
           "cls": "the first ([CLS]) token's embedding",
           "max": "the per-dimension maximum of the token embeddings over the attention mask"}[pooling]
    return f"one sentence embedding: {how}" + (", L2-normalised (unit length)" if normalize else "")


def describe(names: list[str], max_length: int, pad_id: int, token: str | None, pooling: str,
             normalize: bool) -> list[str]:
    """The contract as ordered, human-readable steps (for text.json and the docs' readers)."""
    steps = ["load tokenizer.json with the tokenizers library (Tokenizer.from_file); drop its own padding and "
             f"truncation settings; truncate at {max_length} tokens (special tokens included, longest_first, right)",
             "encode the sentences as one batch (encode_batch, special tokens added)",
             f"pad on the right to the batch's longest encoding, at least {MIN_LENGTH} tokens: input_ids with "
             f"{pad_id}" + (f" ({token})" if token else "") + ", attention_mask and token_type_ids with 0",
             f"feed int64 [batch, sequence] arrays in this order: {', '.join(names)}"]
    if pooling == "none":
        steps.append("read token embeddings [batch, sequence, hidden]; ignore rows where attention_mask is 0")
    else:
        steps.append(f"read the {'unit-length ' if normalize else ''}sentence embedding [batch, hidden] "
                     f"({pooling} pooling{', L2-normalised' if normalize else ''}, done inside the model)")
        steps.append("similarity of two sentences: cosine of their embeddings"
                     + (" (their dot product, as they are unit length)" if normalize else ""))
    return steps
