"""A self-contained HTML report of one fine-tune: model performance and the curves of training loss,
learning rate and validation loss/accuracy, drawn by the console's own chart code (the vendored uPlot
and charts.js from tuneforge/web/static, inlined), so the file works opened from disk, offline."""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from tuneforge.run_folder import REPORT_HTML

STATIC = Path(__file__).with_name("web") / "static"
# The files the console's chart pages load (templates/_chart_assets.html names the same ones).
CHART_CSS = ("uplot-1.6.32.min.css", "charts.css")
CHART_JS = ("uplot-1.6.32.min.js", "charts.js")

STAND_IN_NOTE = '<p class="warn">Trained on the bundled stand-in model, not the real base-model weights.</p>'
PAGE_CSS = """body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2937}
body{margin:0 auto;padding:16px;max-width:1200px}
h1{font-size:22px;overflow-wrap:anywhere} h2{font-size:16px;margin:20px 0 8px} .warn{color:#b45309}
table.kv{border-collapse:collapse} .kv th,.kv td{padding:3px 10px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
.kv th{color:#6b7280;font-weight:500} pre{background:#f5f5f5;padding:8px;overflow-x:auto}"""


def _inline(names: tuple[str, ...], tag: str) -> str:
    # A file inlined into <script>/<style> must not close the element early; the vendored ones do not.
    texts = [(STATIC / name).read_text(encoding="utf-8") for name in names]
    if any(f"</{tag}" in text.lower() for text in texts):
        raise ValueError(f"a chart asset contains </{tag}> and cannot be inlined")
    return "".join(f"<{tag}>\n{text}\n</{tag}>\n" for text in texts)


def _json_for_script(records: list[dict]) -> str:
    # A diverged run logs a loss of NaN or inf, which JSON cannot carry: those points become gaps.
    finite = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()} for r in records]
    # Safe inside <script type="application/json">: no "</" can close the element early.
    return json.dumps(finite, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_report(output: Path, model: dict, records: list[dict]) -> Path:
    metrics = model["modelMetrics"]
    stand_in = STAND_IN_NOTE if model.get("standIn") else ""
    early = " (early stopped)" if model["earlyStopped"] else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>TuneForge: {html.escape(model["baseModelId"])}</title>
<style>{PAGE_CSS}</style>
{_inline(CHART_CSS, "style")}</head><body>
<h1>Fine-tune of {html.escape(model["baseModelId"])} ({html.escape(model["method"])})</h1>{stand_in}
<h2>Model performance (validation split)</h2>
<table class="kv"><tr><th>Accuracy</th><td>{metrics["finalAccuracy"]:.4f}</td></tr>
<tr><th>Loss</th><td>{metrics["finalLoss"]:.4f}</td></tr>
<tr><th>Steps</th><td>{model["stepsRun"]} of {model["totalTrainingSteps"]}{early};
best adapter from step {model["bestStep"]}</td></tr>
</table>
<h2>Training curves</h2>
<div class="charts" id="charts"><noscript><p>The charts need JavaScript.</p></noscript></div>
<h2>Training config</h2><pre>{html.escape(json.dumps(model["trainingConfig"], indent=1))}</pre>
<script type="application/json" id="report-data">{_json_for_script(records)}</script>
{_inline(CHART_JS, "script")}<script>
const records = JSON.parse(document.getElementById("report-data").textContent);
TuneCharts.mount(document.getElementById("charts"), [{{ name: "", records }}]);
</script>
</body></html>
"""
    path = output / REPORT_HTML
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")  # readers never see half a report
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
