"""Small inline-SVG charts: scatter, lines and horizontal bars.

The report must open without network, so plots are drawn here as SVG text
(no matplotlib, no JavaScript). Each function returns one ``<svg>`` element
with a ``data-chart`` attribute naming it, so tests and readers can find it.
"""

from __future__ import annotations

import math
from html import escape
from typing import Optional, Sequence

W, H = 640, 320  # drawing size in px
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 44  # margins for the axes and their labels
LEGEND = 150  # right margin of a chart with a legend
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.3g}"
    return f"{v:.4g}"


class _Frame:
    """Maps data coordinates to pixels and draws the axes."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], pad: float = 0.05, right: int = RIGHT):
        self.x0, self.x1 = _span(xs, pad)
        self.y0, self.y1 = _span(ys, pad)
        self.right = right  # room on the right for the legend, so it never covers a point

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - self.right)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def axes(self, xlabel: str, ylabel: str, xticks: Optional[list[tuple[float, str]]] = None) -> list[str]:
        """The axes, ticks and labels; ``xticks`` (value, label) replaces the round x ticks (e.g. a log scale)."""
        right = W - self.right
        out = [f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{right}" y2="{H - BOTTOM}" class="axis"/>',
               f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" class="axis"/>']
        for t, label in xticks or [(t, _fmt(t)) for t in nice_ticks(self.x0, self.x1)]:
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" y1="{H - BOTTOM}" x2="{x:.1f}" y2="{H - BOTTOM + 4}" class="axis"/>'
                       f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{escape(label)}</text>')
        for t in nice_ticks(self.y0, self.y1):
            y = self.py(t)
            out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" class="grid"/>'
                       f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        out.append(f'<text x="{(LEFT + right) / 2}" y="{H - 6}" text-anchor="middle">{escape(xlabel)}</text>')
        out.append(f'<text x="14" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2})">{escape(ylabel)}</text>')
        return out


def _span(values: Sequence[float], pad: float) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    if hi == lo:  # a single value still needs a visible range
        d = abs(lo) * 0.1 or 1.0
        return lo - d, hi + d
    d = (hi - lo) * pad
    return lo - d, hi + d


def _svg(name: str, title: str, body: list[str], legend: Optional[list[tuple[str, str]]] = None) -> str:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
             f'data-chart="{escape(name)}" role="img"><title>{escape(title)}</title>', *body]
    for i, (label, color) in enumerate(legend or []):
        y = TOP + 6 + 16 * i
        parts.append(f'<rect x="{W - LEGEND + 12}" y="{y - 8}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{W - LEGEND + 26}" y="{y + 1}">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def scatter(name: str, title: str, points: list[dict], xlabel: str, ylabel: str,
            line: Optional[list[tuple[float, float]]] = None,
            legend: Optional[list[tuple[str, str]]] = None) -> str:
    """Points ``{x, y, r?, color?, label?, tip?}``; ``line`` is an optional step path (e.g. best so far).

    Returns:
        One ``<svg>`` element as text.
    """
    pts = [p for p in points if p.get("y") is not None and p.get("x") is not None]
    frame = _Frame([p["x"] for p in pts], [p["y"] for p in pts] + [y for _, y in line or []], pad=0.08,
                   right=LEGEND if legend else RIGHT)
    body = frame.axes(xlabel, ylabel)
    if line:
        path = " ".join(f"{'M' if i == 0 else 'L'}{frame.px(x):.1f},{frame.py(y):.1f}" for i, (x, y) in enumerate(line))
        body.append(f'<path d="{path}" class="trend"/>')
    for p in pts:
        r = p.get("r", 4)
        tip = f"<title>{escape(p['tip'])}</title>" if p.get("tip") else ""
        body.append(f'<circle cx="{frame.px(p["x"]):.1f}" cy="{frame.py(p["y"]):.1f}" r="{r:.1f}" '
                    f'fill="{p.get("color", PALETTE[0])}" class="point">{tip}</circle>')
        if p.get("label"):
            body.append(f'<text x="{frame.px(p["x"]) + r + 3:.1f}" y="{frame.py(p["y"]) - 3:.1f}" '
                        f'class="label">{escape(p["label"])}</text>')
    return _svg(name, title, body, legend)


def lines(name: str, title: str, series: list[dict], xlabel: str, ylabel: str,
          xticks: Optional[list[tuple[float, str]]] = None) -> str:
    """Series ``{label, points: [(x, y), ...]}``, one colour each, with a legend.

    ``xticks`` (value, label) pairs replace the round x ticks, e.g. 1, 2, 4, 8, 16 on a log2 axis.

    Returns:
        One ``<svg>`` element as text.
    """
    series = [s for s in series if s["points"]]
    frame = _Frame([x for s in series for x, _ in s["points"]], [y for s in series for _, y in s["points"]],
                   right=LEGEND)
    body = frame.axes(xlabel, ylabel, xticks)
    legend = []
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{frame.px(x):.1f},{frame.py(y):.1f}"
                        for j, (x, y) in enumerate(s["points"]))
        body.append(f'<path d="{path}" stroke="{color}" class="series"/>')
        body += [f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="2.5" fill="{color}"/>'
                 for x, y in s["points"]]
        legend.append((s["label"], color))
    return _svg(name, title, body, legend)


def bars(name: str, title: str, items: list[tuple[str, float]], xlabel: str) -> str:
    """Horizontal bars, largest first (e.g. parameter importances).

    Returns:
        One ``<svg>`` element as text.
    """
    items = sorted(items, key=lambda kv: -kv[1])
    height = max(TOP + BOTTOM + 24 * len(items), 120)
    top = max((v for _, v in items), default=1.0) or 1.0
    left, width = 200, W - 200 - RIGHT - 50
    body = []
    for i, (label, value) in enumerate(items):
        y = TOP + 24 * i
        w = max(value / top * width, 1)
        body.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
                    f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="16" fill="{PALETTE[0]}"/>'
                    f'<text x="{left + w + 4:.1f}" y="{y + 14}">{value:.3f}</text>')
    body.append(f'<text x="{left + width / 2}" y="{height - 8}" text-anchor="middle">{escape(xlabel)}</text>')
    svg = _svg(name, title, body)
    return svg.replace(f'viewBox="0 0 {W} {H}" width="{W}" height="{H}"',
                       f'viewBox="0 0 {W} {height}" width="{W}" height="{height}"', 1)
