"""``quant.kind=qat``: quantization-aware training with torchao's pt2e flow, exported to a QDQ ONNX model.

The model kind's FP32 torch module (the ``torch_model`` port) is fine-tuned with fake quantization on the data's
training split, converted and exported (step ``quantize.torchao_qat``, ``qcompile/steps/qat.py``). The result is the
``int8`` variant, which the same evaluate, benchmark, compare and bundle steps measure as a post-training one.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from ...errors import BadInput
from ...graph import Node, Ref, StepParams
from ...models.arch import Arch
from ...signature import Signature
from ..builder import Variant
from ..registry import register
from ..section import Kind
from ._ort import HOST


@register("quant")
class QatQuant(Kind):
    """Quantization-aware training (torchao pt2e): fine-tune the FP32 weights with fake quantization, then export."""

    requires: ClassVar[dict[str, str]] = {"torchao": "qat", "torch": "torch"}

    kind: Literal["qat"]
    epochs: PositiveInt = Field(2, description="epochs of fine-tuning over the training split")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate (small: training starts from the FP32 weights)")
    batch_size: int = Field(64, ge=1, le=4096, description="samples per training step")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the batch order (and of dropout, if any)")
    activation_type: Literal["auto", "uint8", "int8"] = Field(
        "auto", description="auto: the target's (uint8 on x86 ORT CPU, int8 for TensorRT and ARM); uint8 is "
                            "asymmetric (torchao's x86 config), int8 symmetric")
    per_channel: bool = Field(True, description="one weight scale per output channel (false: one per tensor)")
    reduce_range: bool = Field(
        False, description="7-bit activations (uint8 0..127, int8 -64..63), as torchao's x86 config offers for "
                           "CPUs without VNNI: ORT's AVX2 u8s8 kernels can saturate on full-range activations")
    fold_bn: bool = Field(
        True, description="fold each BatchNorm into the convolution before it (its statistics frozen) before "
                          "training; false: torchao's QAT conv-bn, whose statistics keep training, and whose "
                          "convert re-traces its conv-bn patterns (about a minute of CPU)")
    tolerance: float = Field(
        0.02, gt=0, description="max difference allowed between the converted torch model's outputs and its ONNX "
                                "export's (ORT without graph optimisations: the same QDQ arithmetic), relative to "
                                "the largest output; a value rounded to the next quantization step moves later "
                                "layers by a step too")

    def activation(self, b) -> str:
        """The activation type: the recipe's, or for ``auto`` the target's default (``host``: decided by the
        machine that runs the step). A target that asks symmetric activations (TensorRT) refuses uint8."""
        defaults = b.need("quant.defaults", self, "the target's quantization defaults")
        activation = defaults["activation_type"] if self.activation_type == "auto" else self.activation_type
        if activation == "uint8" and defaults.get("activation_symmetric"):
            target = getattr(b.recipe, "target", None)
            raise BadInput(f"quant.activation_type=uint8 gives asymmetric activations; target.kind="
                           f"{getattr(target, 'kind', '?')} needs symmetric int8 ones (set quant.activation_type="
                           "int8 or auto)", key="quant.activation_type")
        return activation

    def compile(self, b) -> None:
        torch_model = b.need("torch_model", self, "a torch model")
        sig = b.need("signature", self)
        if sig.task != "classification":
            # The fine-tuning loss is cross-entropy against the split's labels.
            raise BadInput(f"quant.kind=qat fine-tunes a classifier; the model's task is {sig.task}",
                           key="quant.kind")
        train = b.need("samples.train", self, "a training split (samples.train)")
        params = QatParams(quant=self, arch=torch_model.arch, signature=sig, activation_type=self.activation(b))
        b.add(Node("qat", "quantize.torchao_qat", params, inputs={"module": torch_model.module, "train": train}))
        b.add_variant(Variant("int8", Ref("qat", "model"), scheme=params.scheme()))


class QatParams(StepParams):
    """Params of the ``quantize.torchao_qat`` step: the section, the module's architecture and signature, and the
    activation type resolved from the target (``host``: by the machine that runs the step)."""

    quant: QatQuant
    arch: Arch
    signature: Signature  # input and output names of the exported model (the FP32 one's), its dynamic axes
    activation_type: str

    def scheme(self) -> dict[str, Any]:
        """How the variant was made, flat, for reports and the bundle."""
        q = self.quant
        return {"kind": "qat", "step": "quantize.torchao_qat",
                **q.model_dump(mode="json", exclude={"kind", "activation_type", "tolerance"}),
                "activation_type": self.activation_type,
                **({"activation_symmetric": self.activation_type == "int8"} if self.activation_type != HOST else {})}
