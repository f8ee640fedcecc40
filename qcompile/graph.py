"""The step graph: nodes with typed params and named inputs, held in a networkx DiGraph, and what happened to
each node in a build.

Knows nothing of torch or ONNX: a node only names its step kind. A node's params are a pydantic model: the step's
``Params``, which holds the recipe sections the step reads (``qcompile.kinds``) and the facts the plan worked out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from pydantic import BaseModel, ConfigDict


class StepParams(BaseModel):
    """Base for step params that are not a section themselves: frozen and strict about unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


@dataclass(frozen=True)
class Ref:
    """An input wired from another node's named output."""

    node: str
    output: str


@dataclass
class Node:
    """One step of a build.

    ``publish`` maps an output to a path under the build's ``artifacts/`` folder; ``gate`` holds quality-gate
    limits, checked on every build but kept out of the key (changing a tolerance does not redo the work).
    """

    name: str
    kind: str
    params: BaseModel  # the step's Params: a StepParams, or a section the step takes as it is
    inputs: dict[str, Ref] = field(default_factory=dict)
    publish: dict[str, str] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepOutcome:
    """What happened to one node in a build."""

    name: str
    kind: str
    key: str | None
    status: str  # ran | cached | failed | pending | will run
    seconds: float = 0.0
    peak_mb: float | None = None  # the step's peak resident memory, when it ran (Linux)
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    gate_error: str | None = None
    error: str | None = None


class Plan:
    """A DAG of nodes; edges run from producer to consumer.

    ``variants`` describes the models the plan measures (name -> where its model comes from, how it was made,
    which nodes evaluate, time and compare it), so reports need not know node names.
    """

    def __init__(self) -> None:
        self.graph = nx.DiGraph()
        self.variants: dict[str, dict[str, Any]] = {}

    def add(self, node: Node) -> Node:
        """Add a node and the edges from the producers of its inputs (which must already be in the plan)."""
        if node.name in self.graph:
            raise ValueError(f"duplicate node {node.name!r}")
        self.graph.add_node(node.name, node=node)
        for ref in node.inputs.values():
            if ref.node not in self.graph:
                raise ValueError(f"{node.name}: input from unknown node {ref.node!r}")
            self.graph.add_edge(ref.node, node.name)
        return node

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        return self.graph.nodes[name]["node"]

    def order(self) -> list[Node]:
        """Nodes in a deterministic topological order."""
        return [self.node(n) for n in nx.lexicographical_topological_sort(self.graph, key=self._rank)]

    def restricted(self, targets: list[str]) -> Plan:
        """The part of this plan that ``targets`` need: them and every node they depend on, same nodes and order.

        A search runs only what judges a trial (quantize, evaluate, compare), not what measures or packages it."""
        keep = set(targets).union(*(nx.ancestors(self.graph, t) for t in targets))
        part = Plan()
        for node in self.order():
            if node.name in keep:
                part.add(node)
        return part

    def _rank(self, name: str) -> str:
        # Insertion order first, so the table reads in the order the plan was written.
        return f"{list(self.graph.nodes).index(name):04d}"

    def __contains__(self, name: str) -> bool:
        return name in self.graph

    def __len__(self) -> int:
        return len(self.graph)
