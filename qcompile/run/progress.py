"""What the user sees while a build runs: a line per step, progress bars for long loops, a summary table."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import printable
from ..graph import Node, StepOutcome


def _text(message: str) -> str:
    """A step's message as rich prints it verbatim: no markup read into its brackets, no control codes (a library's
    colours) carried into a terminal or a log file."""
    return escape(printable(message))


class Reporter:
    """Prints build progress to stderr (stdout stays free for machine-readable output)."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(stderr=True)
        self.quiet = quiet

    def start(self, node: Node) -> None:
        """A step is about to run."""
        if not self.quiet:
            self.console.print(f"[bold cyan]▶[/] {node.name} [dim]({node.kind})[/]")

    def waiting(self, node: Node) -> None:
        """Another build holds the step's lock."""
        if not self.quiet:
            self.console.print(f"[dim]… {node.name}: another build is running this step; waiting to reuse it[/]")

    def track(self, items: Iterable[Any], total: int | None, description: str) -> Iterator[Any]:
        """Yield ``items`` while drawing a progress bar (on a terminal)."""
        if self.quiet or not self.console.is_terminal:
            yield from items
            return
        # Here, not at module level: a fully cached build draws no bar and should not pay for rich.progress.
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = [TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        # transient: the bar disappears when done, leaving the log readable; off a terminal rich stays silent.
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(description, total=total)
            for item in items:
                yield item
                progress.advance(task)

    def note(self, node: Node, message: str) -> None:
        """A remark from a step (e.g. an opset other than the one asked for)."""
        if not self.quiet:
            self.console.print(f"  [yellow]note[/] {node.name}: {_text(message)}")

    def finish(self, outcome: StepOutcome) -> None:
        """A step ran or was reused; say so, and report a failed gate."""
        if self.quiet:
            return
        if outcome.status == "ran":
            self.console.print(f"  [green]✓[/] {outcome.name} ran in {outcome.seconds:.2f}s")
        if outcome.gate_error:
            self.console.print(f"  [red]✗ gate[/] {outcome.name}: {_text(outcome.gate_error)}")

    def summary(self, outcomes: list[StepOutcome], title: str = "build") -> None:
        """The closing table: every step, ran or cached, its seconds and (when it ran) its peak memory."""
        if self.quiet:
            return
        table = Table(title=title, title_justify="left")
        for col in ("step", "kind", "status", "seconds", "peak MB", "key"):
            table.add_column(col, justify="right" if col in ("seconds", "peak MB") else "left")
        colors = {"ran": "green", "cached": "blue", "failed": "red"}
        for o in outcomes:
            c = colors.get(o.status, "white")
            peak = f"{o.peak_mb:.0f}" if o.peak_mb is not None else ""
            table.add_row(o.name, o.kind, f"[{c}]{o.status}[/]", f"{o.seconds:.2f}", peak, (o.key or "-")[:12])
        total = sum(o.seconds for o in outcomes)
        peaks = [o.peak_mb for o in outcomes if o.peak_mb is not None]
        table.add_row("total", "", "", f"{total:.2f}", f"{max(peaks):.0f}" if peaks else "", "", end_section=True)
        self.console.print(table)
