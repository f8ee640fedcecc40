"""``data.kind=npy_folder``: a folder of ``.npy`` files, one preprocessed sample per file (what a pipeline that
saves tensors one by one leaves behind), labelled by the sub-folder each file sits in, or unlabelled."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt

from ...errors import BadInput
from ...graph import Node, StepParams
from ...signature import TensorSpec
from ..registry import register
from ..section import UserDir
from ._split import SplitData, provide_splits


@register("data")
class NpyFolderData(SplitData):
    """A folder of .npy files, each one sample of the model's single input without the batch axis."""

    kind: Literal["npy_folder"]
    path: UserDir = Field(description="the folder; its .npy files are read in sorted order, hidden ones left out")
    labels: Literal["folders"] | None = Field(
        "folders", description="folders: <path>/<class index>/*.npy; null: unlabelled (fidelity to FP32 only)")
    eval_samples: PositiveInt = 50

    def compile(self, b) -> None:
        sig = b.need("signature", self)
        if len(sig.inputs) != 1:
            raise BadInput(f"one .npy file is one sample of one input; the model takes {sig.input_names}",
                           key="data.kind")
        files = sorted(f for f in self.path.rglob("*.npy")
                       if not any(part.startswith(".") for part in f.relative_to(self.path).parts))
        if not files:
            raise BadInput(f"{self.path} holds no .npy files", key="data.path")
        last = sig.outputs[0].shape[-1] if sig.outputs[0].shape else None
        labels = self._labels(files, last if isinstance(last, int) else None)
        calib = self.calib_samples(b)
        if self.eval_samples + calib > len(files):
            raise BadInput(f"{self.path} holds {len(files)} samples; data.eval_samples={self.eval_samples} plus "
                           f"quant.calibration.samples={calib} need {self.eval_samples + calib}",
                           key="data.eval_samples")
        b.add(Node("data", "data.npy_folder", NpyFolderParams(data=self, files=tuple(files), labels=labels,
                                                              input=sig.inputs[0], calib_samples=calib)))
        provide_splits(self, b, "data", ("calib", "eval"), labels=labels is not None)

    def _labels(self, files: list[Path], classes: int | None) -> tuple[int, ...] | None:
        """The class index of each file: the name of the sub-folder it sits in."""
        if self.labels is None:
            return None
        names = [f.relative_to(self.path).parts[0] if f.parent != self.path else "" for f in files]
        bad = sorted({n for n in names if not n.isdigit() or (classes is not None and int(n) >= classes)})
        if bad:
            indices = f"0..{classes - 1}" if classes else "a class index"
            raise BadInput(f"labels come from sub-folders named by class index ({indices}); {self.path} has "
                           f"{bad[:5]} (set data.labels=null for unlabelled samples)", key="data.labels")
        return tuple(int(n) for n in names)


class NpyFolderParams(StepParams):
    """Params of the ``data.npy_folder`` step: the section, and the files and labels it found."""

    data: NpyFolderData
    files: tuple[Path, ...]
    labels: tuple[int, ...] | None
    input: TensorSpec  # the model's single input
    calib_samples: int
