"""The builder a recipe compiles into: a plan of nodes, named ports between sections, and model variants.

A port is a name (``samples.calib``, ``onnx.fp32``, ``signature``...) bound to a value: a ``Ref`` to a node's
output or a plain fact. A kind reads the ports it needs and provides its own; a port nobody provides is bad
input naming the recipe keys involved ("quant.kind=qat needs torch_model; model.kind=onnx provides none").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BadInput
from ..graph import Node, Plan, Ref
from .section import Kind

# Which recipe group is expected to provide a port, for the message when none did.
PORT_OWNERS = {"samples": "data", "signature": "model", "preprocess": "model", "labels": "model",
               "torch_model": "model", "onnx": "model", "runtime": "target", "quant": "quant",
               "target": "target", "calib": "quant", "text": "model"}


@dataclass
class Variant:
    """One model the build measures: the FP32 reference or what a scheme made of it.

    ``model`` is the ONNX file the quant scheme produced; ``deploy`` is what the target runs, set by a target's
    compile nodes when it converts the model (an ``.ort`` file, an engine); ``scheme`` describes how it was made,
    for reports and bundles.
    """

    name: str
    model: Ref
    scheme: dict[str, Any]
    deploy: Ref | None = None

    @property
    def runs(self) -> Ref:
        """What evaluate and benchmark load: the target's artifact when it compiled one."""
        return self.deploy or self.model


class Builder:
    """Collects nodes, ports and variants while sections compile."""

    def __init__(self, recipe: Any):
        self.recipe = recipe
        self.plan = Plan()
        self.variants: list[Variant] = []
        self._ports: dict[str, tuple[Any, str]] = {}

    # ---------------------------------------------------------------- ports
    def provide(self, port: str, value: Any, by: Kind | str) -> None:
        """Bind ``port``; a second provider of the same port is a bug in the kinds."""
        if port in self._ports:
            raise RuntimeError(f"port {port!r} provided twice ({self._ports[port][1]} and {_label(by)})")
        self._ports[port] = (value, _label(by))

    def get(self, port: str, default: Any = None) -> Any:
        """The value of ``port``, or ``default`` when nobody provided it."""
        return self._ports[port][0] if port in self._ports else default

    def need(self, port: str, by: Kind | str, what: str | None = None) -> Any:
        """The value of ``port``; bad input naming both sections when it is missing."""
        if port in self._ports:
            return self._ports[port][0]
        owner = PORT_OWNERS.get(port.split(".", 1)[0])
        section = getattr(self.recipe, owner, None) if owner else None
        who = f"{owner}.kind={section.kind}" if section is not None else "no section"
        raise BadInput(f"{_label(by)} needs {what or port}; {who} provides none",
                       key=f"{owner}.kind" if owner else None)

    # ---------------------------------------------------------------- nodes and variants
    def add(self, node: Node) -> Node:
        """Add a node to the plan and return it."""
        return self.plan.add(node)

    def shared(self, node: Node) -> Node:
        """Add ``node`` unless an identical one (same name, kind, params, inputs) is already there."""
        if node.name in self.plan:
            have = self.plan.node(node.name)
            if (have.kind, have.params, have.inputs) != (node.kind, node.params, node.inputs):
                raise RuntimeError(f"two different nodes named {node.name!r}")
            return have
        return self.plan.add(node)

    def add_variant(self, variant: Variant) -> Variant:
        """Register a model variant; names must be unique (they name nodes and artifacts)."""
        if any(v.name == variant.name for v in self.variants):
            raise RuntimeError(f"variant {variant.name!r} added twice")
        self.variants.append(variant)
        return variant


def _label(by: Kind | str) -> str:
    return by if isinstance(by, str) else by.label
