"""sweep.html: a self-contained page of a sweep's outcome, rebuilt from the sweep folder's files
(results.json, learning-curve.json, sweep.json and each trial's metrics.jsonl) after every trial.
Charts come from tuneforge.sweeps.plots."""

from __future__ import annotations

import html
import json
from typing import Any

from tuneforge.catalog import format_number
from tuneforge.run_folder import RunFolder
from tuneforge.sweeps.plots import Series, chart
from tuneforge.sweeps.spec import SweepFolder

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px} .warn{color:#b45309} figure{display:inline-block;margin:8px;vertical-align:top}
td,th{padding:2px 10px;text-align:left} tr:nth-child(even){background:#f6f6f6} pre{background:#f5f5f5;padding:8px} .verdict{font-size:1.15em;padding:8px;background:#eef6ff}"""


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _param(value: float) -> str:
    return format_number(value) if isinstance(value, int) else f"{value:.6g}"


def _table(results: dict[str, Any]) -> str:
    searched = results["searched"]
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in ["rank", "trial", *searched, "validation loss", "accuracy", "steps", "state", "time"]
    )
    rows = []
    for i, r in enumerate(results["ranked"], 1):
        params = "".join(f"<td>{_param(r['params'][n]) if n in r['params'] else '-'}</td>" for n in searched)
        state = r["state"] + (" (defaults)" if r["defaults"] else "") + (" (early stopped)" if r["earlyStopped"] else "")
        title = f' title="{html.escape(r["error"])}"' if r.get("error") else ""
        rows.append(
            f"<tr{title}><td>{i}</td><td>{r['number']}</td>{params}<td>{_num(r['validationLoss'])}</td>"
            f"<td>{_num(r['validationAccuracy'])}</td><td>{r['stepsRun']}/{r['stepsPlanned']}</td><td>{state}</td>"
            f"<td>{r['seconds']:.0f} s</td></tr>"
        )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _curves(folder: SweepFolder, results: dict[str, Any]) -> str:
    series = []
    for r in sorted(results["ranked"], key=lambda r: r["number"]):
        if not r.get("runFolder"):
            continue
        evals = [m for m in RunFolder(folder.path / r["runFolder"]).all_metrics() if m.get("kind") == "eval"]
        label = f"trial {r['number']}" + (" (defaults)" if r["defaults"] else "") + (" pruned" if r["state"] == "pruned" else "")
        series.append(
            Series(
                label, [(m["epoch"], m["validationLoss"]) for m in evals], style="dashed" if r["state"] == "pruned" else "line"
            )
        )
    return chart("Validation loss during training (evaluation cycles)", series, "epoch", "validation loss")


def _param_plots(results: dict[str, Any], space: dict[str, Any]) -> str:
    figures = []
    for name in results["searched"]:
        by_state: dict[str, list[tuple[float, float]]] = {}
        for r in results["ranked"]:
            if name in r["params"] and r["validationLoss"] is not None:
                by_state.setdefault(r["state"], []).append((float(r["params"][name]), r["validationLoss"]))
        series = [
            Series(state, pts, style="points", color={"complete": "#2563eb", "pruned": "#9ca3af"}.get(state))
            for state, pts in by_state.items()
        ]
        log_x = bool(space.get(name, {}).get("log"))
        figures.append(
            chart(
                f"{name} against the validation loss",
                series,
                name + (" (log scale)" if log_x else ""),
                "validation loss",
                log_x=log_x,
            )
        )
    return "".join(figures)


def _curve_section(curve: dict[str, Any]) -> str:
    verdict = f'<p class="verdict">{html.escape(curve["verdict"])}</p>'
    if not curve.get("fitted"):
        return f"<h2>Would more data help?</h2>{verdict}"
    points = curve["points"]
    fit = curve["fit"]
    n_full = points[-1]["trainingExamples"]
    xs = [n_full * k / 40 for k in range(4, 161)]
    fitted = [(x, fit["c"] + fit["a"] * x ** -fit["b"]) for x in xs]
    measured = Series(
        "measured (80 % bootstrap interval)",
        [(p["trainingExamples"], p["loss"]) for p in points],
        style="points",
        errors=[(p["low"], p["high"]) for p in points],
        color="#2563eb",
    )
    predicted = Series(
        "expected at 2x and 4x the data",
        [(p["trainingExamples"], p["loss"]) for p in curve["predictions"]],
        style="points",
        errors=[(p["low"], p["high"]) for p in curve["predictions"]],
        color="#dc2626",
    )
    figure = chart(
        "Validation loss against training examples",
        [Series(curve["formula"], fitted, style="dashed", color="#6b7280"), measured, predicted],
        "training examples",
        "validation loss",
    )
    return f"<h2>Would more data help?</h2>{verdict}{figure}"


def write_report(folder: SweepFolder) -> None:
    results = folder.read(folder.results_json)
    curve = folder.read(folder.curve_json)
    pinned = folder.read(folder.sweep_json) or {}
    base, search = pinned.get("base", {}), pinned.get("search") or {}
    parts = [f"<h1>Sweep: {html.escape(str(base.get('baseModelId', '')))} on {html.escape(str(base.get('dataset', '')))}</h1>"]
    stand_in = base.get("weights") == "stand-in"
    if stand_in:
        parts.append(
            "<p class=warn>Every run trained the bundled SmolLM2-135M-Instruct stand-in, not the real base-model weights.</p>"
        )
    if results is not None:
        steps, best = results["steps"], results["bestTrial"]
        parts.append(
            f"<h2>Search ({html.escape(search.get('search', ''))}, {len(results['ranked'])} of {results['trials']} trials"
            f"{', stopped' if results['stopped'] else ''})</h2><p>Best: trial {best}, validation loss {_num(results['bestValidationLoss'])} "
            f"against {_num(results['defaultsValidationLoss'])} for the defaults (trial 0): {_pct(results['gainOverDefaults'])} lower. "
            f"Training steps: {steps['run']} run of {steps['planned']} planned; the pruner saved {steps['savedByPruning']} "
            f"({_pct(steps['prunedShare'])}), early stopping {steps['savedByEarlyStopping']}.</p>"
        )
        parts += [f"<p class=warn>{html.escape(n)}</p>" for n in results["notes"]]
    if curve is not None:
        parts.append(_curve_section(curve))
    if results is not None:
        parts += [
            "<h2>Trials, best first</h2>",
            _table(results),
            _curves(folder, results),
            _param_plots(results, search.get("searchSpace", {})),
        ]
    parts.append(f"<h2>Settings</h2><pre>{html.escape(json.dumps(pinned, indent=1))}</pre>")
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>TuneForge sweep</title><style>{STYLE}</style></head>'
        f"<body>{''.join(parts)}</body></html>"
    )
    tmp = folder.report_html.with_name(folder.report_html.name + ".tmp")
    tmp.write_text(page)
    tmp.replace(folder.report_html)
