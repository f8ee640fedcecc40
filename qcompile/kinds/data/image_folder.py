"""``data.kind=image_folder``: a folder of the user's images, labelled by sub-folder (torchvision's ImageFolder
convention), by a labels file, or not at all; transformed with the model's preprocessing contract."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt

from ...errors import BadInput
from ...graph import Node, StepParams
from ...signature import TensorSpec
from ..registry import register
from ..section import UserDir, UserFile
from ._split import SplitData, image_contract, provide_splits

# torchvision's ImageFolder extensions.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _norm(name: str) -> str:
    """Class names compare without case, spaces, underscores or hyphens ('tabby cat' == 'Tabby_Cat')."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _images(root: Path) -> list[Path]:
    """Image files under ``root``, sorted, hidden files and folders left out."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


class ClassMap:
    """Maps a label (class name or index) to the model's class index."""

    def __init__(self, names: list[str] | None, count: int | None):
        self.names, self.count = names, count
        self._by_name = {_norm(n): i for i, n in enumerate(names or [])}

    def index(self, label: str) -> int | None:
        """The class index of ``label``, or None when it names no class of the model."""
        label = label.strip()
        if label.isdigit():
            i = int(label)
            return i if self.count is None or i < self.count else None
        # A name may list synonyms ("tabby, tabby cat"): the first matches too.
        hit = self._by_name.get(_norm(label))
        if hit is None:
            hit = next((i for i, n in enumerate(self.names or []) if _norm(n.split(",")[0]) == _norm(label)), None)
        return hit

    def describe(self) -> str:
        if self.names:
            shown = ", ".join(self.names[:5])
            return f"the model's {len(self.names)} class names ({shown}...) or indices 0..{len(self.names) - 1}"
        return f"class indices 0..{self.count - 1}" if self.count else "class indices"


@register("data")
class ImageFolderData(SplitData):
    """A folder of image files: ``photos/<class>/*.jpg`` (labels from sub-folder names), a labels file, or none."""

    kind: Literal["image_folder"]
    path: UserDir
    labels: Literal["folders"] | UserFile | None = Field(
        "folders", description="folders: the sub-folder names are class names or indices (torchvision's "
                               "ImageFolder); a file: lines 'relative/path.jpg,label'; null: unlabelled")
    on_bad_image: Literal["fail", "skip"] = Field("fail", description="an image that cannot be decoded: fail the "
                                                                      "build (exit 2) or leave it out")
    batch_size: PositiveInt = Field(32, description="images decoded and transformed at once")
    eval_samples: PositiveInt = 50

    def _files_and_labels(self, classes: ClassMap) -> tuple[list[Path], list[int] | None]:
        if self.labels is None:
            return _images(self.path), None
        if self.labels == "folders":
            files = [f for f in _images(self.path) if f.parent != self.path]
            loose = [f.name for f in _images(self.path) if f.parent == self.path]
            if loose and not files:
                raise BadInput(f"{self.path} holds images but no class sub-folders; put them in <class>/ folders, "
                               "or set data.labels=null for unlabelled images", key="data.labels")
            labels, bad = [], set()
            for f in files:
                folder = f.relative_to(self.path).parts[0]
                i = classes.index(folder)
                if i is None:
                    bad.add(folder)
                labels.append(i)
            if bad:
                raise BadInput(f"sub-folders {sorted(bad)[:5]} of {self.path} name no class of the model; use "
                               f"{classes.describe()}", key="data.path")
            return files, labels
        return self._from_labels_file(Path(self.labels), classes)

    def _from_labels_file(self, path: Path, classes: ClassMap) -> tuple[list[Path], list[int]]:
        files, labels = [], []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            sep = "\t" if "\t" in line else ","
            name, _, label = line.rpartition(sep)
            i = classes.index(label) if name else None
            if i is None:
                raise BadInput(f"{path} line {n}: {line.strip()[:80]!r} is not 'image,label' with a label among "
                               f"{classes.describe()}", key="data.labels")
            f = (self.path / name.strip()).resolve()
            if not f.is_file():
                raise BadInput(f"{path} line {n}: {f} does not exist", key="data.labels")
            files.append(f)
            labels.append(i)
        return files, labels

    def compile(self, b) -> None:
        image, pre = image_contract(self, b, f"the files in {self.path}")
        sig = b.need("signature", self)
        last = sig.outputs[0].shape[-1] if sig.outputs[0].shape else None
        classes = ClassMap(b.get("labels"), last if isinstance(last, int) else None)
        files, labels = self._files_and_labels(classes)
        if not files:
            raise BadInput(f"{self.path} holds no images ({', '.join(IMAGE_EXTENSIONS)})", key="data.path")
        calib = self.calib_samples(b)
        if self.eval_samples + calib > len(files):
            raise BadInput(f"{self.path} holds {len(files)} images; data.eval_samples={self.eval_samples} plus "
                           f"quant.calibration.samples={calib} need {self.eval_samples + calib}",
                           key="data.eval_samples")
        b.add(Node("data", "data.image_folder",
                   ImageFolderParams(data=self, files=tuple(files), labels=None if labels is None else tuple(labels),
                                     input=image, preprocess=pre, calib_samples=calib)))
        provide_splits(self, b, "data", ("calib", "eval"), labels=labels is not None)


class ImageFolderParams(StepParams):
    """Params of the ``data.image_folder`` step: the section, and the files and labels it resolved to."""

    data: ImageFolderData
    files: tuple[Path, ...]
    labels: tuple[int, ...] | None  # one class index per file, or None: unlabelled
    input: TensorSpec  # the model's image input, with a concrete (C, H, W)
    preprocess: dict[str, Any]  # the model's contract, with the concrete input shape
    calib_samples: int
