"""The ``quantize.torchao_qat`` step: quantization-aware fine-tuning with torchao's pt2e flow, exported to QDQ ONNX.

torch.export (train mode) -> ``prepare_qat_pt2e`` with ``X86InductorQuantizer`` -> fine-tune ->
``move_exported_model_to_eval`` -> ``convert_pt2e`` -> ``torch.onnx.export(dynamo=True)``. torch 2.14 dropped
``torch.ao.quantization.quantize_pt2e``; torchao (the ``qat`` extra) carries it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any

from ..cache.keys import cpu_isa
from ..errors import BadInput
from ..kinds.quant._ort import ACTIVATION_FOR_ISA, HOST
from ..kinds.quant.qat import QatParams, QatQuant
from ..models import load_module
from ..signature import Signature
from .arrays import batches, load_samples
from .base import Step, StepContext, register
from .export import ExportMismatch, _first_line, _strip_stack_traces, dynamic_shapes

# The exported model's opset: ONNX Runtime and TensorRT 10 run its per-channel QuantizeLinear (opset >= 13); the
# model section's export.opset belongs to the FP32 export, and reading it here would rerun training when it changes.
OPSET = 18
Q_OPS = ("QuantizeLinear", "DequantizeLinear")


def quantizer(activation: str, per_channel: bool, reduce_range: bool = False):
    """``X86InductorQuantizer`` with torchao's QAT config, changed only where the recipe differs from it.

    torchao's x86 config quantizes activations uint8 asymmetric (ORT's fast type on x86) and weights int8
    symmetric per channel; ``reduce_range`` halves the activations' range (0..127). int8 activations (TensorRT,
    ARM) become symmetric int8 (-64..63 with ``reduce_range``); per-tensor weights get a per-tensor observer. The
    fake-quantize constructors and their ``eps`` stay torchao's.
    """
    import dataclasses

    import torch

    with _quiet_torchao_import():
        from torchao.quantization.pt2e import FusedMovingAvgObsFakeQuantize, MovingAverageMinMaxObserver
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

    config = get_default_x86_inductor_quantization_config(is_qat=True, reduce_range=reduce_range)
    if activation == "int8":
        low, high = (-64, 63) if reduce_range else (-128, 127)
        act = dataclasses.replace(config.input_activation, dtype=torch.int8, quant_min=low, quant_max=high,
                                  qscheme=torch.per_tensor_symmetric)
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    if not per_channel:
        weight = dataclasses.replace(
            config.weight, qscheme=torch.per_tensor_symmetric, ch_axis=None,
            observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(
                observer=MovingAverageMinMaxObserver, eps=2**-12))  # eps as torchao's default config sets it
        config = dataclasses.replace(config, weight=weight)
    return X86InductorQuantizer().set_global(config)


@contextlib.contextmanager
def _quiet_torchao_import():
    """torchao's import logs a deprecation warning from torch's pytree module (registering an Enum): hold that one
    logger at ERROR while importing; no other logger is touched."""
    log = logging.getLogger("torch.utils._pytree")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def fold_batch_norms(model, example) -> int:
    """Fold every BatchNorm fed only by a convolution into that convolution (eval statistics), in place; returns
    how many were folded.

    Pairs are found in the exported graph (so any module layout works), and only where each module runs once.
    """
    from collections import Counter

    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()  # fuse_conv_bn_eval folds the running statistics
    graph = torch.export.export(model, example).graph
    calls = [n for n in graph.nodes if n.op == "call_function" and n.meta.get("nn_module_stack")]
    called = set(calls)

    def owner(node) -> str:
        return list(node.meta["nn_module_stack"].values())[-1][0]

    runs = Counter(owner(n) for n in calls)
    pairs = []
    for node in calls:
        source = node.args[0] if node.args else None
        if source not in called or len(source.users) != 1 or runs[owner(node)] != 1 or runs[owner(source)] != 1:
            continue
        try:
            conv, bn = model.get_submodule(owner(source)), model.get_submodule(owner(node))
        except AttributeError:  # a path torch.export names differently from the module tree
            continue
        if isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and \
                isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            pairs.append((owner(source), owner(node), conv, bn))
    for conv_path, bn_path, conv, bn in pairs:
        model.set_submodule(conv_path, fuse_conv_bn_eval(conv, bn))
        model.set_submodule(bn_path, nn.Identity())
    return len(pairs)


def _train_shapes(sig: Signature):
    """torch.export dynamic shapes for training: the signature's named axes, and the batch axis dynamic even where
    the exported model fixes it (the last training batch is shorter)."""
    import torch

    named = dynamic_shapes(sig) or tuple({} for _ in sig.inputs)
    batch = next((axes[0] for axes in named if 0 in axes), torch.export.Dim("batch", min=1, max=4096))
    return tuple({**axes, 0: batch} for axes in named)


@register
class TorchaoQatStep(Step):
    """Fine-tunes the FP32 module with fake quantization (seeded, single-threaded: a rebuild gives the same
    weights), converts it and exports QDQ ONNX with the FP32 model's input and output names."""

    kind = "quantize.torchao_qat"
    Params = QatParams
    inputs = ("module", "train")
    outputs = {"model": "model.int8.onnx"}
    libraries = ("torch", "torchao", "numpy", "onnx", "onnxscript", "onnxruntime")
    # The activation type reaches the key resolved; the tolerance only judges the export, like a gate.
    unkeyed = ("quant.activation_type", "quant.tolerance")

    def host_facts(self, p: QatParams) -> dict[str, Any]:
        return {"isa": cpu_isa()} if p.activation_type == HOST else {}

    def run(self, ctx: StepContext, p: QatParams) -> dict[str, Any]:
        import torch

        with _quiet_torchao_import():
            from torchao.quantization.pt2e import move_exported_model_to_eval
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

        q, sig = p.quant, p.signature
        activation = ACTIVATION_FOR_ISA[cpu_isa()] if p.activation_type == HOST else p.activation_type
        inputs, labels = load_samples(ctx.inputs["train"])
        if labels is None or len(labels) < 2:
            raise BadInput("quant.kind=qat needs a labelled training split of 2 samples or more", key="data.kind")
        xs = [torch.from_numpy(inputs[name]) for name in sig.input_names]
        example = tuple(x[:2] for x in xs)  # a batch of 2: a batch of 1 lets torch.export specialise the axis

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # reductions in a fixed order, so a rebuild trains the same weights
        try:
            torch.manual_seed(q.seed)
            model = load_module(p.arch, ctx.inputs["module"])
            folded = fold_batch_norms(model, example) if q.fold_bn else 0
            try:
                graph = torch.export.export(model.train(), example, dynamic_shapes=_train_shapes(sig)).module()
                prepared = prepare_qat_pt2e(graph, quantizer(activation, q.per_channel, q.reduce_range))
            except Exception as e:  # torch.export and torchao raise many types; the model is the user's
                raise BadInput(f"torchao cannot prepare this model for QAT: {_first_line(e)}", key="quant.kind") from e
            loss = _fine_tune(ctx, prepared, xs, torch.from_numpy(labels), q)
        finally:
            torch.set_num_threads(threads)
        move_exported_model_to_eval(prepared)  # not .eval(): exported modules switch dropout/BN through this
        converted = convert_pt2e(prepared)
        diff = _export(ctx, converted, sig, example, tuple(x[:3] for x in xs), q.tolerance)
        return {**_count(ctx), "activation_type": activation, "activation_symmetric": activation == "int8",
                **({"isa": cpu_isa()} if p.activation_type == HOST else {}), "epochs": q.epochs,
                "train_loss": round(loss, 5), "train_samples": len(labels), "folded_bn": folded,
                "max_rel_diff": diff}


def _fine_tune(ctx: StepContext, model, xs: list, y, q: QatQuant) -> float:
    """Adam over seeded shuffles of the training split; the mean loss of the last epoch."""
    import numpy as np
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=q.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(q.seed)
    total = 0.0
    for epoch in range(q.epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        spans = batches(len(y), q.batch_size)
        total = 0.0
        for a, b in ctx.track(spans, len(spans), f"QAT epoch {epoch + 1}/{q.epochs}"):
            idx = order[a:b]
            opt.zero_grad()
            out = model(*(x[idx] for x in xs))
            loss = loss_fn(out[0] if isinstance(out, (tuple, list)) else out, y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * (b - a)
    return total / len(y)


def _export(ctx: StepContext, converted, sig: Signature, example: tuple, check: tuple, tolerance: float) -> float:
    """QDQ ONNX with the signature's names and axes, checked, and compared with the converted torch model on
    ``check`` (another batch size than the example's, which also proves the batch axis dynamic); the difference."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    dynamic = dynamic_shapes(sig)
    fixed = next((d for d in sig.inputs[0].shape[:1] if isinstance(d, int)), None)
    if fixed:  # the FP32 model fixes its batch: so does this one
        example = tuple(x[:1].expand(fixed, *x.shape[1:]) for x in example)
        check = example
    path = ctx.out("model")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(converted, example, str(path), dynamo=True, opset_version=OPSET, external_data=False,
                              input_names=sig.input_names, output_names=[o.name for o in sig.outputs],
                              **({"dynamic_shapes": dynamic} if dynamic else {}))
        except Exception as e:  # the exporter raises many types
            raise BadInput(f"torch.onnx.export cannot export the QAT model: {_first_line(e)}",
                           key="quant.kind") from e
    proto = onnx.load(str(path))
    _strip_stack_traces(proto)  # absolute source paths would make the bytes depend on the checkout
    onnx.save(proto, str(path))
    onnx.checker.check_model(proto, full_check=True)

    with torch.no_grad():
        expected = converted(*check)
    expected = (expected if isinstance(expected, (tuple, list)) else [expected])[0].numpy()
    # Without graph optimisations ORT computes Q/DQ as torch's reference does; its fused integer kernels (the
    # default) round intermediate results differently, which evaluate and compare measure instead.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = sess.run(None, {spec.name: x.numpy() for spec, x in zip(sig.inputs, check)})[0]
    # Relative to the largest output: one activation rounded to the neighbouring step (torch and ORT order their
    # float sums differently) moves everything after it by a quantization step, not by float noise.
    diff = float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-12))
    if not diff <= tolerance:  # also catches NaN
        raise ExportMismatch(f"the QAT model's ONNX output differs from torch by {diff:.2e} of its largest output "
                             f"(> quant.tolerance {tolerance:g})")
    return diff


def _count(ctx: StepContext) -> dict[str, int]:
    """Node and Q/DQ counts, so a model torchao quantized nothing of is visible in the report."""
    import onnx

    nodes = onnx.load(str(ctx.out("model"))).graph.node
    count = sum(1 for n in nodes if n.op_type in Q_OPS)
    if count == 0:
        ctx.note("torchao quantized no operator of this model")
    return {"nodes": len(nodes), "quant_nodes": count}
