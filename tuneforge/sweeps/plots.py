"""The sweep report's charts as inline SVG: no script, no CDN, so sweep.html opens anywhere offline.

One function, `chart`, draws every figure of the report (overlaid curves, a hyperparameter against
the validation loss, the learning curve with its error bars). It is the only place that knows how
a chart is drawn: swapping in the console's charting library means rewriting this module alone.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 600, 260, 52
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d")


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]
    style: str = "line"  # line | points | dashed
    errors: list[tuple[float, float]] | None = None  # (low, high) per point: vertical error bars
    color: str | None = None


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) if lo <= 10.0**k <= hi] or [
            lo,
            hi,
        ]
    return [lo + (hi - lo) * i / 4 for i in range(5)]


def chart(title: str, series: list[Series], x_label: str, y_label: str, log_x: bool = False) -> str:
    points = [p for s in series for p in s.points] + [
        (x, e) for s in series for (x, _), b in zip(s.points, s.errors or []) for e in b
    ]
    if log_x:
        points = [p for p in points if p[0] > 0]
    if not points:
        return f"<figure><figcaption><b>{html.escape(title)}</b>: no data yet</figcaption></figure>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 <= x0:
        x0, x1 = (x0 / 2, x0 * 2) if log_x else (x0 - 1, x1 + 1)
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    fx = math.log10 if log_x else (lambda v: v)

    def sx(x: float) -> float:
        return PAD + (fx(x) - fx(x0)) / (fx(x1) - fx(x0)) * (WIDTH - 2 * PAD)

    def sy(y: float) -> float:
        return HEIGHT - PAD - (y - y0) / (y1 - y0) * (HEIGHT - 2 * PAD)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{html.escape(title)}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white" stroke="#ddd"/>',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 12}" font-size="11" text-anchor="middle">{html.escape(x_label)}</text>',
        f'<text x="12" y="{HEIGHT / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {HEIGHT / 2})">{html.escape(y_label)}</text>',
    ]
    parts += [
        f'<text x="{sx(t):.1f}" y="{HEIGHT - PAD + 15}" font-size="10" text-anchor="middle">{t:.3g}</text>'
        for t in _ticks(x0, x1, log_x)
    ]
    parts += [
        f'<text x="{PAD - 4}" y="{sy(t) + 3:.1f}" font-size="10" text-anchor="end">{t:.3g}</text>' for t in _ticks(y0, y1, False)
    ]
    legend = []
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        pts = [p for p in s.points if p[0] > 0] if log_x else s.points
        if s.style in ("line", "dashed") and len(pts) > 1:
            dash = ' stroke-dasharray="5,4"' if s.style == "dashed" else ""
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8"{dash} points="{path}"/>')
        if s.style == "points" or len(pts) < 40:
            parts += [
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{3.5 if s.style == "points" else 2}" fill="{color}"/>'
                for x, y in pts
            ]
        for (x, _), (lo, hi) in zip(pts, s.errors or []):
            parts.append(
                f'<line x1="{sx(x):.1f}" y1="{sy(lo):.1f}" x2="{sx(x):.1f}" y2="{sy(hi):.1f}" stroke="{color}" stroke-width="1.5"/>'
            )
        legend.append(f'<span style="color:{color}">&#9632;</span> {html.escape(s.label)}')
    parts.append("</svg>")
    return f"<figure><figcaption><b>{html.escape(title)}</b><br><small>{' &nbsp; '.join(legend)}</small></figcaption>{''.join(parts)}</figure>"
