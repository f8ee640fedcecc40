"""``model.kind=hf_encoder``: a local Hugging Face encoder folder (config, weights, tokenizer.json), exported to ONNX
with named int64 inputs, dynamic ``batch`` and ``sequence`` axes, and the model's own pooling inside the graph, so
the model and the bundle return sentence embeddings.

Nothing is downloaded: the folder is read as it is (``HF_HUB_OFFLINE``). Everything this module reads at plan time
is JSON (config.json, modules.json, the pooling config); transformers and torch load in the export step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ...errors import BadInput
from ...graph import Node, Ref, StepParams
from ...signature import Signature, TensorSpec
from ..registry import register
from ..section import Kind, Section, UserDir
from ._transformer import ENCODER_QUANT_DEFAULTS

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# What a sentence-transformers folder says about pooling: 1_Pooling/config.json's flags -> our pooling names.
_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                  "pooling_mode_max_tokens": "max"}
Pooling = Literal["auto", "mean", "cls", "max", "none"]


def _json(path: Path, key: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{path} is not readable JSON ({str(e)[:120]})", key=key) from None


class HfEncoderExportSpec(Section):
    """How the encoder becomes ONNX (the batch and sequence axes are always dynamic)."""

    opset: int | None = Field(None, ge=14, le=23, description="ONNX opset of the exported model (null: 18; 17 with "
                              "model.fusion=transformer, the opset whose graph ORT's fusions match)")
    tolerance: float = Field(1e-4, gt=0, description="max abs difference allowed between torch and ONNX outputs, "
                                                     "checked at another batch size and sequence length than the "
                                                     "export's, with padding")


@register("model")
class HfEncoderModel(Kind):
    """A Hugging Face encoder from a local folder; pooling and L2 normalisation as the model defines them."""

    requires: ClassVar[dict[str, str]] = {"torch": "torch", "transformers": "transformers",
                                          "tokenizers": "transformers"}

    kind: Literal["hf_encoder"]
    path: UserDir = Field(description="the model folder (config.json, model.safetensors, tokenizer.json); "
                                      "pkg://<package>/<folder> names one inside an installed package")
    pooling: Pooling = Field("auto", description="auto: what the folder's sentence-transformers config says "
                             "(1_Pooling/config.json); mean / cls / max over the tokens; none: token embeddings")
    normalize: bool | None = Field(None, description="L2-normalise the pooled embedding (null: when modules.json "
                                                     "lists a Normalize module)")
    export: HfEncoderExportSpec = HfEncoderExportSpec()
    fusion: Literal["none", "transformer"] = Field(
        "none", description="transformer: export with eager attention through torch's TorchScript exporter (the graph "
                            "ORT's fusions match) and run ORT's transformer optimizer (Attention, "
                            "SkipLayerNormalization, EmbedLayerNormalization, Gelu fusions); every variant, FP32 "
                            "included, starts from the fused graph")

    def _folder(self) -> dict[str, Any]:
        """What the folder says, read as JSON; bad input naming the file when a part is missing."""
        config = self.path / "config.json"
        if not config.is_file():
            raise BadInput(f"{self.path} has no config.json: not a Hugging Face model folder", key="model.path")
        cfg = _json(config, "model.path")
        weights = [self.path / w for w in WEIGHTS if (self.path / w).is_file()]
        if not weights:
            raise BadInput(f"{self.path} holds no weights ({', '.join(WEIGHTS)})", key="model.path")
        if not (self.path / "tokenizer.json").is_file():
            raise BadInput(f"{self.path} has no tokenizer.json (the tokenizers library reads it; "
                           "tokenizer.save_pretrained(folder) writes it)", key="model.path")
        modules = _json(self.path / "modules.json", "model.path") if (self.path / "modules.json").is_file() else []
        return {"config": cfg, "modules": modules, "weights": weights}

    def _pooling(self, modules: list[dict[str, Any]]) -> tuple[str, bool]:
        pooling = self.pooling
        if pooling == "auto":
            pool = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
            if pool is None:
                raise BadInput(f"model.pooling=auto reads the pooling from modules.json; {self.path} names none "
                               "(set model.pooling to mean, cls, max or none)", key="model.pooling")
            cfg = _json(self.path / pool.get("path", "") / "config.json", "model.path")
            modes = [name for flag, name in _POOLING_FLAGS.items() if cfg.get(flag)]
            if len(modes) != 1:
                raise BadInput(f"{self.path / pool.get('path', '')} pools by {modes or 'nothing qcompile knows'}; "
                               "set model.pooling to mean, cls, max or none", key="model.pooling")
            pooling = modes[0]
        normalize = self.normalize
        if normalize is None:
            normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
        if pooling == "none" and normalize:
            raise BadInput("normalises a pooled embedding; model.pooling=none returns token embeddings",
                           key="model.normalize")
        return pooling, normalize

    def text_contract(self) -> dict[str, Any]:
        """The ``text`` port: how text becomes this model's inputs and what its output means (for the data, the
        benchmark and the bundle)."""
        folder = self._folder()
        cfg = folder["config"]
        pooling, normalize = self._pooling(folder["modules"])
        positions = cfg.get("max_position_embeddings")
        max_length = positions
        st = self.path / "sentence_bert_config.json"
        if st.is_file():
            max_length = _json(st, "model.path").get("max_seq_length", max_length)
        tok_cfg = self.path / "tokenizer_config.json"
        tok = _json(tok_cfg, "model.path") if tok_cfg.is_file() else {}
        names = tok.get("model_input_names") or (
            ["input_ids", "token_type_ids", "attention_mask"] if cfg.get("type_vocab_size") else
            ["input_ids", "attention_mask"])
        if "input_ids" not in names or "attention_mask" not in names:
            raise BadInput(f"{tok_cfg} names inputs {names}; an encoder takes input_ids and attention_mask",
                           key="model.path")
        return {"tokenizer": str(self.path / "tokenizer.json"), "inputs": list(names),
                "max_length": int(max_length or 512), "max_positions": int(positions or max_length or 512),
                "pooling": pooling, "normalize": normalize, "hidden_size": cfg.get("hidden_size"),
                "output": "token_embeddings" if pooling == "none" else "sentence_embedding"}

    def declare(self, b) -> None:
        text = self.text_contract()
        seq = ("batch", "sequence")
        hidden = text["hidden_size"] if isinstance(text["hidden_size"], int) else "hidden"
        out_shape = ("batch", "sequence", hidden) if text["pooling"] == "none" else ("batch", hidden)
        sig = Signature(inputs=tuple(TensorSpec(name=n, dtype="int64", shape=seq) for n in text["inputs"]),
                        outputs=(TensorSpec(name=text["output"], shape=out_shape),), task="embedding")
        b.provide("signature", sig, self)
        b.provide("text", text, self)
        b.provide("preprocess", None, self)
        b.provide("quant.model_defaults", ENCODER_QUANT_DEFAULTS, self)

    def compile(self, b) -> None:
        folder = self._folder()
        files = [self.path / "config.json", *folder["weights"]]
        b.add(Node("export", "export.hf_encoder",
                   HfEncoderExportParams(model=self, text=b.need("text", self), signature=b.need("signature", self),
                                         files=tuple(files),
                                         opset=self.export.opset or (17 if self.fusion == "transformer" else 18)),
                   publish={} if self.fusion != "none" else {"model": "model.fp32.onnx"}))
        model = Ref("export", "model")
        if self.fusion == "transformer":
            cfg = folder["config"]
            b.add(Node("fuse", "optimize.ort_transformer",
                       FusionParams(model_type=_ORT_MODEL_TYPES.get(cfg.get("model_type"), "bert"),
                                    num_heads=int(cfg.get("num_attention_heads") or 0),
                                    hidden_size=int(cfg.get("hidden_size") or 0)),
                       inputs={"model": model}, publish={"model": "model.fp32.onnx"}))
            model = Ref("fuse", "model")
        b.provide("onnx.fp32", model, self)


# config.json's model_type -> the optimizer's model type (its BERT fusions fit the BERT family of encoders).
_ORT_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert",
                    "mpnet": "bert", "electra": "bert"}


class FusionParams(StepParams):
    """Params of the ``optimize.ort_transformer`` step: what the optimizer must know of the encoder."""

    model_type: str
    num_heads: int
    hidden_size: int


class HfEncoderExportParams(StepParams):
    """Params of the ``export.hf_encoder`` step: the section, what the folder says (pooling resolved), the
    signature, and the files whose content makes the model (config and weights)."""

    model: HfEncoderModel
    opset: int  # resolved
    text: dict[str, Any]
    signature: Signature
    files: tuple[Path, ...]
