"""The fallback search's plot as a cached step: the metric of each trial against the nodes it kept in float.

A step, not a report function, so a search replayed from the cache copies the stored PNG instead of importing
matplotlib and drawing again (most of a fully cached fallback build's time otherwise)."""

from __future__ import annotations

from typing import Any

from .base import Step, StepContext, StepParams, register


class SearchPlotParams(StepParams):
    """What the plot shows: each trial's nodes in float, value and verdict, the built trial, and the labels."""

    points: list[tuple[int, float | None, bool]]  # (nodes in float, metric value, passed) in trial order
    chosen: int
    metric: str
    title: str


@register
class SearchPlotStep(Step):
    """PNG of a fallback search (matplotlib, ``qcompile[sweep]``)."""

    kind = "plot.search"
    Params = SearchPlotParams
    outputs = {"plot": "search.png"}
    libraries = ("matplotlib",)
    deterministic = False  # PNG bytes depend on the matplotlib build; the figures they show do not

    def run(self, ctx: StepContext, p: SearchPlotParams) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        shown = [(i, n, v, ok) for i, (n, v, ok) in enumerate(p.points) if v is not None]
        for passed, colour, label in ((True, "tab:green", "passes the gate"), (False, "tab:red", "fails the gate")):
            pts = [(n, v) for _, n, v, ok in shown if ok is passed]
            ax.scatter([n for n, _ in pts], [v for _, v in pts], c=colour, label=label, zorder=3)
        for i, n, v, _ in shown:
            ax.annotate(str(i), (n, v), textcoords="offset points", xytext=(4, 4), fontsize=8)
        n, v, _ = p.points[p.chosen]
        if v is not None:
            ax.scatter([n], [v], s=160, facecolors="none", edgecolors="black", label="built", zorder=4)
        ax.set_xlabel("nodes kept in float")
        ax.set_ylabel(p.metric)
        ax.set_title(p.title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(ctx.out("plot"), metadata={"Software": None})
        plt.close(fig)
        return {"trials": len(p.points)}
