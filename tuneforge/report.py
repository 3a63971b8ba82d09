"""A self-contained HTML report of one fine-tune: model performance and the curves of training
loss, learning rate and validation loss/accuracy as inline SVG (no scripts, no CDN)."""

from __future__ import annotations

import html
import json
from pathlib import Path

WIDTH, HEIGHT, PAD = 560, 220, 44


def svg_chart(title: str, series: dict[str, list[tuple[float, float]]], colors=("#2563eb", "#dc2626", "#16a34a")) -> str:
    points = [p for s in series.values() for p in s]
    if not points:
        return f"<figure><figcaption>{html.escape(title)}: no data</figcaption></figure>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x: float) -> float:
        return PAD + (x - x0) / (x1 - x0) * (WIDTH - 2 * PAD)

    def sy(y: float) -> float:
        return HEIGHT - PAD + (y - y0) / (y1 - y0) * (2 * PAD - HEIGHT)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{html.escape(title)}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white" stroke="#ddd"/>',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
        f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" font-size="11">{x0:g}</text>',
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" font-size="11" text-anchor="end">step {x1:g}</text>',
        f'<text x="{PAD - 4}" y="{sy(y1) + 4}" font-size="11" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{PAD - 4}" y="{sy(y0) + 4}" font-size="11" text-anchor="end">{y0:.3g}</text>',
    ]
    for (name, pts), color in zip(series.items(), colors):
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>' for x, y in pts] if len(pts) < 60 else []
    legend = " ".join(f'<span style="color:{c}">&#9632; {html.escape(n)}</span>' for n, c in zip(series, colors))
    parts.append("</svg>")
    return f"<figure><figcaption><b>{html.escape(title)}</b> {legend}</figcaption>{''.join(parts)}</figure>"


def write_report(output: Path, model: dict, records: list[dict]) -> Path:
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    metrics = model["modelMetrics"]
    stand_in = "<p class=warn>Trained on the bundled stand-in model, not the real base-model weights.</p>" if model.get("standIn") else ""
    charts = [
        svg_chart("Training loss", {"training loss": [(r["step"], r["loss"]) for r in train]}),
        svg_chart("Learning rate", {"learning rate": [(r["step"], r["learningRate"]) for r in train]}),
        svg_chart("Validation loss", {"validation loss (evaluation cycles)": [(r["step"], r["validationLoss"]) for r in evals]}),
        svg_chart("Validation accuracy", {"token accuracy (evaluation cycles)": [(r["step"], r["validationAccuracy"]) for r in evals]}),
    ]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>TuneForge: {html.escape(model['baseModelId'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}} .warn{{color:#b45309}} figure{{display:inline-block;margin:8px}}
td,th{{padding:2px 10px;text-align:left}} pre{{background:#f5f5f5;padding:8px}}</style></head><body>
<h1>Fine-tune of {html.escape(model['baseModelId'])} ({html.escape(model['method'])})</h1>{stand_in}
<h2>Model performance (validation split)</h2>
<table><tr><th>Accuracy</th><td>{metrics['finalAccuracy']:.4f}</td></tr><tr><th>Loss</th><td>{metrics['finalLoss']:.4f}</td></tr>
<tr><th>Steps</th><td>{model['stepsRun']} of {model['totalTrainingSteps']}{' (early stopped)' if model['earlyStopped'] else ''}; best adapter from step {model['bestStep']}</td></tr></table>
{''.join(charts)}
<h2>Training config</h2><pre>{html.escape(json.dumps(model['trainingConfig'], indent=1))}</pre></body></html>"""
    path = output / "report.html"
    path.write_text(page)
    return path
