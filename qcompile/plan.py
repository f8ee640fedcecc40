"""Compile a validated recipe into a graph of steps, in a fixed order with no per-kind branches:

    declare (every section's facts) -> data -> model -> quant -> target -> measure -> package

Each section kind adds its own nodes (``qcompile.kinds``); this module only orders them and adds, for every
model variant, the nodes that measure it once (evaluate, benchmark) and compare it with the FP32 reference.
"""

from __future__ import annotations

from .errors import BadInput
from .graph import Node, Plan, Ref
from .kinds import GROUPS, Builder, Variant
from .kinds.measure import GATES, metric_source
from .recipe.schema import Recipe
from .steps.base import get_step
from .steps.benchmark import BenchmarkParams
from .steps.compare import CompareParams, unmeasurable_gate
from .steps.evaluate import EvaluateParams
from .steps.package import BundleParams
from .steps.speedup import SpeedupParams

REFERENCE = "fp32"


def compile_plan(recipe: Recipe) -> Plan:
    """The step graph of ``recipe``; nothing runs and no heavy library is imported."""
    b = Builder(recipe)
    sections = [getattr(recipe, group) for group in GROUPS]  # data, model, quant, target
    _check_requirements(sections)
    for section in sections:
        section.declare(b)
    for section in sections:
        section.compile(b)
        if section.group == "model":
            b.add_variant(Variant(REFERENCE, b.need("onnx.fp32", section), scheme={"kind": REFERENCE}))
    _measure(b)
    _package(b)
    _check_params(b.plan)
    return b.plan


def _check_requirements(sections: list) -> None:
    """One line naming every extra the recipe's kinds need and lack, before anything is planned or run."""
    missing = {s.label: s.missing_requirements() for s in sections}
    missing = {label: m for label, m in missing.items() if m}
    if missing:
        extras = sorted({extra for m in missing.values() for extra in m.values()})
        what = "; ".join(f"{label} needs {', '.join(m)}" for label, m in missing.items())
        raise BadInput(f"{what}: pip install 'qcompile[{','.join(extras)}]'")


def _check_params(plan: Plan) -> None:
    """Kinds name their steps by kind (they sit below the steps): each node must hold its step's Params."""
    for node in plan.order():
        try:
            want = get_step(node.kind).Params
        except KeyError:
            raise RuntimeError(f"node {node.name!r}: no step is registered as {node.kind!r}") from None
        if not isinstance(node.params, want):
            raise RuntimeError(f"node {node.name!r}: step {node.kind} takes {want.__name__}, "
                               f"got {type(node.params).__name__}")


def _measure(b: Builder) -> None:
    """Per variant: evaluate and benchmark it alone (keys free of other variants' options), then compare each
    non-reference variant with the reference, and time the two as a pair for the speed-up."""
    recipe, sig, runtime = b.recipe, b.need("signature", "measure"), b.need("runtime", "measure")
    samples = b.need("samples.eval", "measure", "evaluation samples (samples.eval)")
    gate = recipe.eval.model_dump(include=set(GATES))
    problem = unmeasurable_gate(gate, sig.task, b.need("samples.labels", "measure", "to know about labels"),
                                bool(b.get("samples.pairs")))
    if problem:
        raise BadInput(problem[1], key=f"eval.{problem[0]}")
    sources = _user_metrics(recipe)
    _check_sequence_lengths(b)
    # The target names its runtime's steps when they are not ONNX Runtime's (the same params either way).
    kinds = {"evaluate": "evaluate.ort", "benchmark": "benchmark.ort", "speedup": "speedup.ort",
             **(b.get("runtime.steps") or {})}
    reference = next(v for v in b.variants if v.name == REFERENCE)
    for v in b.variants:
        b.add(Node(f"evaluate.{v.name}", kinds["evaluate"],
                   EvaluateParams(signature=sig, eval=recipe.eval, runtime=runtime, metric_sources=sources),
                   inputs={"model": v.runs, "data": samples}, publish={"metrics": f"metrics.{v.name}.json"}))
        b.add(Node(f"benchmark.{v.name}", kinds["benchmark"],
                   BenchmarkParams(**recipe.bench.model_dump(), runtime=runtime),
                   inputs={"model": v.runs, "data": samples}, publish={"latency": f"latency.{v.name}.json"}))
        nodes = {"model": f"{v.model.node}.{v.model.output}", "evaluate": f"evaluate.{v.name}",
                 "benchmark": f"benchmark.{v.name}"}
        if v.name != REFERENCE:
            b.add(Node(f"compare.{v.name}", "compare.outputs",
                       CompareParams(task=sig.task, output=sig.outputs[0].name, reference=REFERENCE, variant=v.name,
                                     higher_is_better={n: m.higher_is_better for n, m in recipe.eval.metrics.items()}),
                       inputs={"reference_outputs": Ref(f"evaluate.{REFERENCE}", "outputs"),
                               "reference_metrics": Ref(f"evaluate.{REFERENCE}", "metrics"),
                               "outputs": Ref(f"evaluate.{v.name}", "outputs"),
                               "metrics": Ref(f"evaluate.{v.name}", "metrics"), "data": samples},
                       publish={"comparison": f"comparison.{v.name}.json"},
                       gate=gate))
            nodes["compare"] = f"compare.{v.name}"
            # The speed-up and its verdict: FP32 and the variant timed together, so both see the same machine.
            b.add(Node(f"speedup.{v.name}", kinds["speedup"],
                       SpeedupParams(**recipe.bench.model_dump(), runtime=runtime),
                       inputs={"reference": reference.runs, "model": v.runs, "data": samples},
                       publish={"speedup": f"speedup.{v.name}.json"}))
            nodes["speedup"] = f"speedup.{v.name}"
        b.plan.node(v.model.node).publish.setdefault(v.model.output, f"model.{v.name}.onnx")
        b.plan.variants[v.name] = {"scheme": v.scheme, "reference": v.name == REFERENCE, "nodes": nodes,
                                   "artifact": b.plan.node(v.model.node).publish[v.model.output]}


def _user_metrics(recipe: Recipe) -> list:
    """The module files of the user's metrics, by metric name; bad input for a gate on an undefined metric or a
    function that cannot import (both found before anything runs)."""
    metrics = recipe.eval.metrics
    for name in sorted(recipe.eval.gates):
        if name not in metrics:
            defined = ", ".join(sorted(metrics)) or "none"
            raise BadInput(f"gates a metric that eval.metrics does not define (defined: {defined})",
                           key=f"eval.gates.{name}")
    return [metric_source(name, metrics[name]) for name in sorted(metrics)]


def _check_sequence_lengths(b: Builder) -> None:
    """Sequence lengths need a token model, and none may exceed what its position embeddings cover."""
    lengths, text = b.recipe.bench.sequence_lengths, b.get("text")
    if not lengths:
        return
    if text is None:
        raise BadInput(f"times token models at sequence lengths; model.kind={b.recipe.model.kind} takes no tokens "
                       "(set bench.sequence_lengths=null)", key="bench.sequence_lengths")
    if max(lengths) > text["max_positions"]:
        raise BadInput(f"asks {max(lengths)} tokens; the model takes at most {text['max_positions']}",
                       key="bench.sequence_lengths")


def _package(b: Builder) -> None:
    """The deployment bundle of the last variant (the quantized model; FP32 when no scheme made one); a model with
    a text port ships its tokenizer and text contract too."""
    v = b.variants[-1]
    # What the target adds for its device: the deployed file's name, side files (operator configs, the ONNX an
    # engine came from), texts (a trtexec line) and app snippets.
    extra = (b.get("bundle.files") or {}).get(v.name, {})
    b.add(Node("package", "package.bundle",
               BundleParams(signature=b.need("signature", "package"), normalize=b.get("preprocess"),
                            labels=b.get("labels"), variant=v.name, scheme=v.scheme,
                            runtime=b.need("runtime", "package"), model_file=extra.get("model_file", "model.onnx"),
                            texts=extra.get("texts", {}), app_snippets=extra.get("app_snippets", False),
                            text=b.get("text")),
               inputs={"model": v.runs, **extra.get("files", {})}, publish={"bundle": "bundle.zip"}))
