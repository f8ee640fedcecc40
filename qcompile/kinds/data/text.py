"""``data.kind=text``: text, tokenized by the model's own tokenizer: lines for calibration and evaluation, and
optionally how similar people judged pairs of them (a square score matrix over the lines, as the Lee corpus ships
it, or a tab-separated pair file, as STS-B does), so an encoder is judged on the task, not only on fidelity."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from ...errors import BadInput
from ...graph import Node, StepParams
from ..registry import register
from ..section import UserFile
from ._split import SplitData, provide_splits


@register("data")
class TextData(SplitData):
    """Text for an encoder: evaluation lines (or pairs) with optional human similarity scores, and calibration
    lines that never overlap them."""

    requires: ClassVar[dict[str, str]] = {"tokenizers": "text"}

    kind: Literal["text"]
    texts: UserFile | None = Field(None, description="evaluation texts, one per line")
    scores: UserFile | None = Field(None, description="human similarity of the texts: a square matrix, one row "
                                    "per line of data.texts, whitespace-separated; the pairs above the diagonal "
                                    "are scored")
    pairs: UserFile | None = Field(None, description="instead of data.texts: one pair per line, "
                                                     "text<TAB>text<TAB>score")
    calibration: UserFile | None = Field(None, description="calibration texts, one per line; lines also in the "
                                         "evaluation set are left out (null: drawn from data.texts, which must "
                                         "then carry no scores)")
    encoding: str = Field("utf-8", description="the files' text encoding (the Lee corpus is latin-1)")
    max_length: PositiveInt | None = Field(None, description="tokens per text, longer ones truncated (null: the "
                                           "model's own maximum, e.g. a sentence-transformers max_seq_length)")
    eval_samples: PositiveInt = Field(100, description="texts held out for evaluation when data.calibration is "
                                                       "null; with a calibration file every text is evaluated")

    @model_validator(mode="after")
    def _one_source(self) -> TextData:
        if (self.texts is None) == (self.pairs is None):
            raise ValueError("set exactly one of data.texts (lines) and data.pairs (text<TAB>text<TAB>score)")
        if self.scores is not None and self.texts is None:
            raise ValueError("data.scores scores the lines of data.texts; set data.texts")
        if self.calibration is None and (self.scores is not None or self.pairs is not None):
            raise ValueError("scored pairs index every evaluation text, so calibration text comes from its own "
                             "file: set data.calibration")
        import codecs

        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {self.encoding!r}") from None
        return self

    def compile(self, b) -> None:
        text = b.need("text", self, "a tokenizer (the text port: model.kind=hf_encoder)")
        sig = b.need("signature", self)
        max_length = self.max_length or text["max_length"]
        if max_length > text["max_positions"]:
            raise BadInput(f"is {max_length}; the model takes at most {text['max_positions']} tokens",
                           key="data.max_length")
        b.add(Node("data", "data.text",
                   TextParams(data=self, tokenizer=text["tokenizer"], inputs=tuple(sig.input_names),
                              max_length=max_length, calib_samples=self.calib_samples(b))))
        provide_splits(self, b, "data", ("calib", "eval"), labels=False)
        b.provide("samples.pairs", self.scores is not None or self.pairs is not None, self)


class TextParams(StepParams):
    """Params of the ``data.text`` step: the section, the model's tokenizer file and input names, and the resolved
    token limit."""

    data: TextData
    tokenizer: str
    inputs: tuple[str, ...]
    max_length: int
    calib_samples: int
