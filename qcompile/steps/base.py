"""The contract every step kind follows: typed params, named inputs and outputs, and a ``run``.

A step imports its heavy libraries (torch, onnx, onnxruntime) inside ``run`` so that planning and fully
cached builds stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, TypeVar

from pydantic import BaseModel

from ..graph import StepParams

T = TypeVar("T")

__all__ = ["Step", "StepContext", "StepParams", "get_step", "register"]


@dataclass
class StepContext:
    """What a running step may touch: its verified inputs, its output folder and a progress reporter."""

    inputs: dict[str, Path]
    workdir: Path
    outputs: dict[str, str]
    track_fn: Callable[[Iterable[Any], int | None, str], Iterator[Any]] | None = None
    notes: list[str] = field(default_factory=list)

    def out(self, name: str) -> Path:
        """Path where the step must write its output ``name``."""
        return self.workdir / self.outputs[name]

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        """Iterate ``items`` while showing progress (epochs, calibration batches, benchmark runs)."""
        if self.track_fn is None:
            yield from items
        else:
            yield from self.track_fn(items, total, description)

    def note(self, message: str) -> None:
        """A remark for the user that ends up in the build log and report (e.g. an opset upgrade)."""
        self.notes.append(message)


class Step:
    """One kind of build step. Subclasses set the class attributes and implement ``run``.

    ``Params`` holds what the step reads from the recipe as the sections that declare it (a kind's section, or a
    sub-model of one: ``data: MnistData``, ``Calibration``), never as a second copy of their fields, plus the facts
    the plan worked out (the model's signature, a resolved type). Field paths below are dotted (``data.path``).
    """

    kind: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[BaseModel]]
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[dict[str, str]] = {}
    libraries: ClassVar[tuple[str, ...]] = ()
    # Params fields holding paths to user files: the key holds their content digest, not the path.
    file_fields: ClassVar[tuple[str, ...]] = ()
    # Params that do not change what the step produces: how it runs (a batch size, a memory budget), options of an
    # embedded section that other steps read, or what reaches the step already through an input's digest or a
    # resolved fact. They stay out of the key, so changing them reuses the stored output. A section option not
    # named here is keyed: a forgotten one costs a rerun, never a stale result.
    unkeyed: ClassVar[tuple[str, ...]] = ()
    # True when the output measures this machine (latency): the CPU model then enters the key.
    host_dependent: ClassVar[bool] = False
    # False for measurements (latency): a rebuild is expected to give other bytes, and reproduce says so.
    deterministic: ClassVar[bool] = True

    def host_facts(self, params: Any) -> dict[str, Any]:
        """Facts of the machine that running with ``params`` depends on (the CPU's ISA when a type is chosen
        on the host); they join the key, so another machine never reuses a result made for this one."""
        return {}

    def preflight(self, params: Any) -> None:
        """Check the user's files this step reads (raise ``BadInput``) before the build does any work.

        Called for steps without inputs that are not cached, so a bad file is reported before anything else
        runs or is written to the cache. Keep it cheap; ``run`` may check again.
        """

    def run(self, ctx: StepContext, params: Any) -> dict[str, Any]:
        """Produce every declared output under ``ctx.workdir``; return small JSON-able results."""
        raise NotImplementedError

    def check(self, result: dict[str, Any], gate: dict[str, Any]) -> str | None:
        """Return a failure message when ``result`` breaks the node's quality gate, else None."""
        return None


_REGISTRY: dict[str, type[Step]] = {}


def register(cls: type[Step]) -> type[Step]:
    """Class decorator adding a step kind to the registry."""
    if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
        raise RuntimeError(f"step kind {cls.kind!r} registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def get_step(kind: str) -> Step:
    """An instance of the step registered under ``kind``."""
    from . import load_all

    load_all()
    return _REGISTRY[kind]()
