"""A detector's recent scores as an inline SVG line, with its threshold: pure, no I/O.

Scores are 0..1 by contract (the CRD bounds them), so the vertical scale is fixed and two
sparklines side by side compare. Points without a score (no series scored) break the line
rather than drawing a zero that was never measured. The SVG is inline (no image request, no
script) and styled by classes from the page's stylesheet.
"""

from __future__ import annotations

from collections.abc import Sequence

from vigil.dashboard.markup import Markup, el

WIDTH = 160
HEIGHT = 32
#: Keeps the line off the edges so a 0 or a 1 stays visible.
PAD = 2.0


def _y(score: float) -> float:
    clamped = min(1.0, max(0.0, score))
    return round(PAD + (1.0 - clamped) * (HEIGHT - 2 * PAD), 2)


def _x(index: int, count: int) -> float:
    if count <= 1:
        return WIDTH / 2
    return round(PAD + index * (WIDTH - 2 * PAD) / (count - 1), 2)


def segments(scores: Sequence[float | None]) -> list[list[tuple[float, float]]]:
    """The runs of consecutive scored points, as SVG coordinates (a missing score ends a run)."""
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for i, score in enumerate(scores):
        if score is None:
            if current:
                runs.append(current)
            current = []
            continue
        current.append((_x(i, len(scores)), _y(score)))
    if current:
        runs.append(current)
    return runs


def render(scores: Sequence[float | None], threshold: float | None, anomalous: bool, label: str) -> Markup:
    """The sparkline; ``label`` (escaped) is its accessible name and tooltip."""
    lines: list[Markup] = []
    if threshold is not None:
        y = _y(threshold)
        lines.append(el("line", x1=0, y1=y, x2=WIDTH, y2=y, class_="threshold"))
    for run in segments(scores):
        if len(run) == 1:
            x, y = run[0]
            lines.append(el("circle", cx=x, cy=y, r=1.5, class_="score-dot"))
        else:
            lines.append(el("polyline", points=" ".join(f"{x},{y}" for x, y in run), class_="score-line"))
    if not lines or all(s is None for s in scores):
        lines.append(el("text", "no scores yet", x=WIDTH / 2, y=HEIGHT / 2 + 4, class_="empty"))
    return el("svg", el("title", label), *lines, class_="sparkline anomalous" if anomalous else "sparkline",
              viewbox=f"0 0 {WIDTH} {HEIGHT}", width=WIDTH, height=HEIGHT, role="img", aria_label=label)
