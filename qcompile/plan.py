"""Compile a validated recipe into a graph of steps.

The graph mirrors the manual workflow: data -> model -> export -> optimize -> calibrate -> quantize ->
evaluate (gate) and benchmark. Calibration is its own node, so options that do not change calibration
(format, per-channel, weight type, excluded nodes) reuse the stored ranges.
"""

from __future__ import annotations

import platform

from .graph import Node, Plan, Ref
from .recipe import schema as s
from .steps import benchmark, calibrate, data, evaluate, export, model, optimize, package, quantize


def resolve_activation_type(q: s.StaticQuant) -> str:
    """The activation type for ``auto``: the fast one for the target.

    On x86 ORT CPU, uint8 activations with int8 weights run the VNNI u8s8 kernels. Measured here on ResNet-50
    at batch 1 (benchmarks/resnet50_ort_cpu.py): 6.2 ms with uint8 activations, 23.7 ms with int8 ones, 19.0 ms
    FP32. ARM kernels prefer symmetric int8.
    """
    if q.activation_type != "auto":
        return q.activation_type
    arch = platform.machine().lower()
    return "uint8" if arch in ("x86_64", "amd64", "i686", "x86") else "int8"


def _data_node(recipe: s.Recipe) -> Node:
    d, shape = recipe.data, tuple(recipe.model.input_shape)
    calib = recipe.quant.calibration.samples if isinstance(recipe.quant, s.StaticQuant) else 0
    if isinstance(d, s.MnistData):
        params = data.MnistParams(eval_samples=d.eval_samples, calib_samples=calib, seed=d.seed,
                                  scale=d.normalize.scale, mean=d.normalize.mean, std=d.normalize.std)
        return Node("data", data.MnistData.kind, params)
    if isinstance(d, s.SyntheticData):
        params = data.SyntheticParams(input_shape=shape, eval_samples=d.eval_samples, calib_samples=calib,
                                      seed=d.seed)
        return Node("data", data.SyntheticData.kind, params)
    params = data.NpzParams(path=d.path, x_key=d.x_key, y_key=d.y_key, input_shape=shape,
                            eval_samples=d.eval_samples, calib_samples=calib, seed=d.seed)
    return Node("data", data.NpzData.kind, params)


def _model_nodes(recipe: s.Recipe, plan: Plan) -> Ref:
    """Adds the nodes that yield the FP32 ONNX model; returns a reference to it."""
    m = recipe.model
    if isinstance(m, s.OnnxModel):
        plan.add(Node("model", model.OnnxFile.kind, model.OnnxFileParams(path=m.path, input_shape=tuple(m.input_shape)),
                      publish={"model": "model.fp32.onnx"}))
        return Ref("model", "model")
    if isinstance(m, s.MnistCnnModel):
        t = m.train
        plan.add(Node("train", model.TrainMnistCnn.kind,
                      model.TrainParams(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, seed=t.seed),
                      inputs={"train": Ref("data", "train")}, publish={"weights": "weights.pt"}))
        weights, arch = Ref("train", "weights"), {"family": "mnist_cnn", "name": "mnist_cnn", "num_classes": 10}
    else:
        plan.add(Node("model", model.TorchvisionModel.kind,
                      model.TorchvisionParams(name=m.name, num_classes=m.num_classes, seed=m.seed, weights=m.weights)))
        weights, arch = Ref("model", "weights"), {"family": "torchvision", "name": m.name,
                                                   "num_classes": m.num_classes}
    e = m.export
    plan.add(Node("export", export.ExportOnnx.kind,
                  export.ExportParams(arch=arch, input_shape=tuple(m.input_shape), opset=e.opset,
                                      dynamic_batch=e.dynamic_batch, tolerance=e.tolerance),
                  inputs={"weights": weights}, publish={"model": "model.fp32.onnx"}))
    return Ref("export", "model")


def _quant_nodes(recipe: s.Recipe, plan: Plan, prep: Ref) -> Ref:
    q = recipe.quant
    if isinstance(q, s.DynamicQuant):
        plan.add(Node("quantize", quantize.OrtDynamicQuantize.kind,
                      quantize.DynamicParams(weight_type=q.weight_type, per_channel=q.per_channel,
                                             reduce_range=q.reduce_range, op_types=q.op_types,
                                             exclude_nodes=q.exclude_nodes),
                      inputs={"model": prep}, publish={"model": "model.int8.onnx"}))
        return Ref("quantize", "model")
    c = q.calibration
    plan.add(Node("calibrate", calibrate.OrtCalibrate.kind,
                  calibrate.CalibrateParams(method=c.method, batch_size=c.batch_size, percentile=c.percentile,
                                            symmetric=c.symmetric, op_types=q.op_types),
                  inputs={"model": prep, "data": Ref("data", "calib")}, publish={"ranges": "calibration.json"}))
    plan.add(Node("quantize", quantize.OrtStaticQuantize.kind,
                  quantize.StaticParams(format=q.format, activation_type=resolve_activation_type(q),
                                        weight_type=q.weight_type, per_channel=q.per_channel,
                                        reduce_range=q.reduce_range, op_types=q.op_types,
                                        exclude_nodes=q.exclude_nodes, method=c.method),
                  inputs={"model": prep, "ranges": Ref("calibrate", "ranges")}, publish={"model": "model.int8.onnx"}))
    return Ref("quantize", "model")


def compile_plan(recipe: s.Recipe) -> Plan:
    """The step graph of ``recipe``; nothing runs and no heavy library is imported."""
    plan = Plan()
    plan.add(_data_node(recipe))
    fp32 = _model_nodes(recipe, plan)
    plan.add(Node("optimize", optimize.OrtPreprocess.kind, optimize.PreprocessParams(), inputs={"model": fp32}))
    quant = _quant_nodes(recipe, plan, Ref("optimize", "model"))
    t = recipe.target
    plan.add(Node("evaluate", evaluate.OrtEvaluate.kind,
                  evaluate.EvaluateParams(batch_size=recipe.eval.batch_size, threads=t.intra_op_threads,
                                          level=t.graph_optimization_level),
                  inputs={"fp32": fp32, "quant": quant, "data": Ref("data", "eval")},
                  publish={"metrics": "metrics.json"}, gate=recipe.eval.model_dump(exclude={"batch_size"})))
    b = recipe.bench
    plan.add(Node("benchmark", benchmark.OrtBenchmark.kind,
                  benchmark.BenchmarkParams(input_shape=tuple(recipe.model.input_shape), batch_sizes=b.batch_sizes,
                                            warmup=b.warmup, iterations=b.iterations, threads=t.intra_op_threads,
                                            level=t.graph_optimization_level),
                  inputs={"fp32": fp32, "quant": quant}, publish={"latency": "latency.json"}))
    plan.add(Node("package", package.Bundle.kind, _bundle_params(recipe, plan), inputs={"model": quant},
                  publish={"bundle": "bundle.zip"}))
    return plan


def _bundle_params(recipe: s.Recipe, plan: Plan) -> package.BundleParams:
    """What the app needs to call the model right: the normalisation it was trained with, and class names."""
    m = recipe.model
    if isinstance(m, s.MnistCnnModel):
        norm, labels = recipe.data.normalize, [str(d) for d in range(10)]
    else:
        norm, labels = m.normalize, None
    q = plan.node("quantize")
    return package.BundleParams(input_shape=tuple(m.input_shape), labels=labels,
                                normalize=norm.model_dump() if norm else None,
                                quantization={"kind": q.kind, **q.params.model_dump(mode="json")})
