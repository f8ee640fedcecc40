"""Labels for the points of a matplotlib scatter, placed where they cover no other label, no marker and nothing
outside the axes: a greedy search over offsets around each point, nearest first.

A label that sits next to its point must be nearer its own point than any other; one that had to move away gets a
thin leader line, and a leader that crosses another leader or a marker costs as much as an overlap, since either
ties the label to the wrong point. Positions are judged in display pixels, so call this once the axes' layout
and limits are final.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in display pixels
Segment = tuple[tuple[float, float], tuple[float, float]]

# Where a label may go, nearest first (the first free spot wins): rings of offsets in points past the marker's
# edge; the first ring sits beside the marker and needs no leader.
RINGS = (1.5, 8, 18, 32)
DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0))
# Costs per square pixel of overlap (a label over a label is unreadable, over a marker hides it, outside the axes
# it is cut off) and per label that could be read as another point's.
_ON_LABEL, _ON_MARKER, _OUTSIDE, _MISREAD = 20, 3, 50, 400


@dataclass(frozen=True)
class PointLabel:
    """One label: the data point it names, its text and style, and its marker's half-width in points."""

    xy: tuple[float, float]
    text: str
    color: str = "black"
    bold: bool = False
    half_width: float = 5.0


def place_labels(ax: Any, labels: list[PointLabel], fontsize: float = 8) -> None:
    """Annotate ``ax`` with ``labels``, earlier ones getting the nearer spots. Every marker of ``labels`` is an
    obstacle to every label."""
    renderer = ax.figure.canvas.get_renderer()
    to_px = ax.transData.transform
    scale = ax.figure.dpi / 72
    obstacles: list[Box] = []
    for lab in labels:
        x, y = to_px(lab.xy)
        half = lab.half_width * scale
        obstacles.append((x - half, y - half, x + half, y + half))
    f = ax.get_window_extent(renderer)
    frame = (f.x0, f.y0, f.x1, f.y1)
    placed: list[Box] = []
    leaders: list[Segment] = []
    for n, lab in enumerate(labels):
        style = dict(fontsize=fontsize, color=lab.color, fontweight="bold" if lab.bold else "normal", zorder=7)
        others = obstacles[:n] + obstacles[n + 1:]
        point = tuple(to_px(lab.xy))
        best = None
        for ring, (ux, uy) in ((r, d) for r in RINGS for d in DIRECTIONS):
            dx, dy = ux * (lab.half_width + ring), uy * (lab.half_width + ring)
            ann = ax.annotate(lab.text, lab.xy, xytext=(dx, dy), textcoords="offset points",
                              ha="left" if dx > 0 else "right" if dx < 0 else "center",
                              va="bottom" if dy > 0 else "top" if dy < 0 else "center", **style)
            bb = ann.get_window_extent(renderer)
            box = (bb.x0 - 1, bb.y0 - 1, bb.x1 + 1, bb.y1 + 1)
            cost = (_ON_LABEL * sum(overlap(box, o) for o in placed)
                    + _ON_MARKER * sum(overlap(box, o) for o in obstacles)
                    + _OUTSIDE * (_area(box) - overlap(box, frame)))
            leader = None
            if ring == RINGS[0]:
                own = _distance(box, point)
                cost += _MISREAD * sum(_distance(box, _centre(o)) < own for o in others)
            else:
                leader = (point, _nearest_on(box, point))
                cost += _MISREAD * sum(crosses(leader, other) for other in leaders)
                cost += _MISREAD * sum(crosses(leader, edge) for o in others for edge in _edges(o))
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, box, (dx, dy), leader)
            else:
                ann.remove()
            if cost == 0:
                break
        assert best is not None
        _, ann, box, offset, leader = best
        if leader is not None:
            ha, va = ann.get_horizontalalignment(), ann.get_verticalalignment()
            ann.remove()
            ax.annotate(lab.text, lab.xy, xytext=offset, textcoords="offset points", ha=ha, va=va, **style,
                        arrowprops=dict(arrowstyle="-", color="0.45", lw=0.7, shrinkA=1, shrinkB=lab.half_width + 1))
            leaders.append(leader)
        placed.append(box)


def overlap(a: Box, b: Box) -> float:
    """Area the two boxes share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def crosses(a: Segment, b: Segment) -> bool:
    """Whether segments ``a`` and ``b`` properly intersect (touching ends do not count)."""
    def side(p: Any, q: Any, r: Any) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    (p1, p2), (q1, q2) = a, b
    return side(p1, p2, q1) * side(p1, p2, q2) < 0 and side(q1, q2, p1) * side(q1, q2, p2) < 0


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _nearest_on(box: Box, p: Any) -> tuple[float, float]:
    """The point of ``box`` nearest ``p``: where a leader line from ``p`` meets the label."""
    return min(max(p[0], box[0]), box[2]), min(max(p[1], box[1]), box[3])


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _distance(box: Box, p: Any) -> float:
    q = _nearest_on(box, p)
    return float(((q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2) ** 0.5)


def _edges(box: Box) -> list[Segment]:
    x0, y0, x1, y1 = box
    return [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))]
