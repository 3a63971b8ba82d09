// TuneForge charts: the four training curves of one or more runs, drawn with uPlot (vendored beside
// this file: uplot-1.6.32.min.js, MIT). Used by the console's details and compare pages and inlined
// into report.html, so it needs nothing but uPlot and the page's metrics.jsonl records
// ({"kind": "train"|"eval", "step", ...}, see tuneforge/run_folder.py).
//
// uPlot gives hover values (its legend), drag-to-zoom on the step axis and double-click to reset;
// this module adds what it does not: the curves from records, axis titles, a log-scale toggle, EMA
// smoothing of the training loss, the best evaluation marked, resizing with the card, and a table of
// the points for screen readers.
"use strict";

const TuneCharts = (() => {
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
  const HEIGHT = 220;
  // One chart per curve: its element id, its title, the records it reads, its y axis's title and the
  // curve's name where one run is drawn; smoothing and the best evaluation where they apply.
  const CURVES = [
    { id: "chart-loss", title: "Training loss", kind: "train", key: "loss", axis: "loss", noun: "training loss",
      smoothing: true },
    { id: "chart-lr", title: "Learning rate", kind: "train", key: "learningRate", axis: "learning rate", noun: "learning rate" },
    { id: "chart-val-loss", title: "Validation loss", kind: "eval", key: "validationLoss", axis: "loss", noun: "validation loss",
      best: true },
    { id: "chart-val-acc", title: "Validation accuracy", kind: "eval", key: "validationAccuracy", axis: "accuracy",
      noun: "validation accuracy", best: true },
  ];
  // Whole steps only: uPlot would otherwise tick 0.5, 1.5, ... when zoomed into a few steps.
  const STEP_INCRS = [1, 2, 5].flatMap((m) => [0, 1, 2, 3, 4, 5, 6].map((e) => m * 10 ** e)).sort((a, b) => a - b);

  function fmt(y) {
    if (y === null || y === undefined) return "—";
    if (y === 0) return "0";
    const a = Math.abs(y);
    return a >= 10000 || a < 0.001 ? y.toExponential(1) : Number(y.toPrecision(4)).toString();
  }

  // uPlot's own padded range, except for a flat curve (an accuracy of 0 throughout): uPlot would
  // stretch that to 0..100, which reads as a percentage scale.
  function linearRange(u, min, max) {
    if (min !== max) return uPlot.rangeNum(min, max, 0.1, true);
    const pad = Math.abs(min) * 0.1 || 1;
    return [min >= 0 ? Math.max(0, min - pad) : min - pad, max + pad];
  }

  // An axis label; uPlot passes null for the ticks it leaves unlabelled (between a log scale's decades).
  const tick = (v) => (v === null || v === undefined ? "" : fmt(v));

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // [steps, values] of one run, sorted by step; the last record of a step wins (a resumed run
  // repeats the steps after its checkpoint).
  function points(records, kind, key) {
    const byStep = new Map();
    for (const r of records) if (r.kind === kind && Number.isFinite(r[key])) byStep.set(r.step, r[key]);
    const steps = [...byStep.keys()].sort((a, b) => a - b);
    return [steps, steps.map((s) => byStep.get(s))];
  }

  // The best evaluation so far is the last one marked isBest: that is the adapter training keeps.
  function bestEval(records) {
    let best = null;
    for (const r of records) if (r.kind === "eval" && r.isBest) best = r;
    return best;
  }

  // Exponential moving average, debiased as TensorBoard's smoothing slider is (the first points are
  // not pulled towards 0).
  function smooth(values, weight) {
    let last = 0, n = 0;
    return values.map((v) => {
      last = last * weight + (1 - weight) * v;
      n += 1;
      return last / (1 - weight ** n);
    });
  }

  class Chart {
    constructor(curve, root) {
      this.curve = curve;
      this.log = false;
      this.smoothing = 0;
      this.zoom = null; // {min, max} of the step axis while zoomed in
      this.plot = null;
      this.runs = [];
      this.figure = el("figure", { class: "chart", id: curve.id, "data-title": curve.title, "data-scale": "linear",
                                   "data-points": "0" });
      const caption = el("figcaption");
      caption.appendChild(el("b", {}, curve.title));
      caption.appendChild(this.controls());
      this.figure.appendChild(caption);
      this.box = el("div", { class: "chart-plot", role: "img" });
      this.empty = el("p", { class: "no-data" }, "no data yet");
      this.bestNote = el("p", { class: "chart-best", hidden: "" });
      this.table = el("details", { class: "chart-data" });
      this.table.appendChild(el("summary", {}, "Data points"));
      this.table.addEventListener("toggle", () => this.fillTable());
      this.figure.append(this.box, this.empty, this.bestNote, this.table);
      root.appendChild(this.figure);
      new ResizeObserver(() => this.resize()).observe(this.box);
    }

    controls() {
      const span = el("span", { class: "chart-controls" });
      if (this.curve.smoothing) {
        const label = el("label", { title: "exponential moving average of the training loss (0 = off)" }, "smoothing ");
        const range = el("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: "0",
                                    "aria-label": `${this.curve.title}: smoothing` });
        const shown = el("output", {}, "0");
        range.addEventListener("input", () => {
          shown.textContent = range.value;
          this.smoothing = Number(range.value);
          this.build();
        });
        label.append(range, shown);
        span.appendChild(label);
      }
      const label = el("label", {}, " log scale");
      const box = el("input", { type: "checkbox", class: "log-toggle", "aria-label": `${this.curve.title}: log scale` });
      box.addEventListener("change", () => {
        this.log = box.checked;
        this.figure.dataset.scale = this.log ? "log" : "linear";
        this.build();
      });
      label.prepend(box);
      span.appendChild(label);
      return span;
    }

    // runs: [{name, records}]; name "" for the one run of a details page or report.
    update(runs) {
      const structure = (r) => r.map((run) => run.name).join("\n");
      const same = this.plot && structure(runs) === structure(this.runs);
      this.runs = runs;
      this.raw = runs.map((run) => points(run.records, this.curve.kind, this.curve.key));
      this.best = this.curve.best ? runs.map((run) => bestEval(run.records)) : [];
      this.figure.dataset.points = String(this.raw.reduce((n, [steps]) => n + steps.length, 0));
      this.describe();
      this.showEmpty();
      if (same) {
        this.plot.setData(this.data(), this.zoom === null); // keep a zoomed-in view while new points arrive
      } else {
        this.build();
      }
      if (this.table.open) this.fillTable();
    }

    label(i) {
      return this.runs[i].name || this.curve.noun;
    }

    // Series per run: the values (smoothed when asked), then the raw values faintly when smoothed.
    seriesOf(i) {
      const color = COLORS[i % COLORS.length];
      const value = (u, v) => fmt(v);
      const main = { label: this.label(i), stroke: color, width: 2, spanGaps: true, value };
      if (!this.smoothing) return [main];
      const raw = { label: `${this.label(i)} (raw)`, stroke: color + "55", width: 1, spanGaps: true, value };
      return [{ ...main, label: `${this.label(i)} (smoothed)` }, raw];
    }

    data() {
      // A log scale has no place for 0 or below: those points become gaps.
      const shown = (values) => (this.log ? values.map((v) => (v > 0 ? v : null)) : values);
      const tables = this.raw.map(([steps, values]) => {
        const columns = this.smoothing ? [smooth(values, this.smoothing), values] : [values];
        return [steps, ...columns.map(shown)];
      });
      return uPlot.join(tables); // one step axis for all runs; a run without a point at a step has a gap there
    }

    // Says so when there is nothing to draw: no points yet, or none a log scale can show.
    showEmpty() {
      const hasPoints = this.figure.dataset.points !== "0";
      const nothingAboveZero = this.log && !this.raw.some(([, values]) => values.some((v) => v > 0));
      this.empty.textContent = hasPoints ? "nothing above 0 to show on a log scale" : "no data yet";
      this.empty.hidden = hasPoints && !nothingAboveZero;
      this.box.hidden = this.table.hidden = !hasPoints;
      return hasPoints;
    }

    build() {
      if (this.plot) this.plot.destroy();
      this.plot = null;
      if (!this.showEmpty()) return;
      const axis = { stroke: "#6b7280", grid: { stroke: "#f0f0f0" }, ticks: { stroke: "#e5e7eb" },
                     font: "11px system-ui, sans-serif", labelFont: "12px system-ui, sans-serif" };
      const step = { label: "step", value: (u, v) => (v === null || v === undefined ? "—" : String(v)) };
      const opts = {
        width: this.width(),
        height: HEIGHT,
        scales: { x: { time: false }, y: this.log ? { distr: 3 } : { range: linearRange } },
        axes: [
          { ...axis, label: "step", labelSize: 18, size: 32, incrs: STEP_INCRS, values: (u, splits) => splits.map(tick) },
          { ...axis, label: this.curve.axis, labelSize: 18, size: 56, values: (u, splits) => splits.map(tick) },
        ],
        series: [step, ...this.runs.flatMap((r, i) => this.seriesOf(i))],
        cursor: { drag: { x: true, y: false } },
        hooks: { setScale: [(u, key) => key === "x" && this.zoomed(u)], draw: [(u) => this.markBest(u)] },
      };
      const zoom = this.zoom;
      this.plot = new uPlot(opts, this.data(), this.box);
      this.figure.uplot = this.plot; // for the browser tests, which read the scales uPlot really uses
      if (zoom) this.plot.setScale("x", zoom);
    }

    zoomed(u) {
      const steps = u.data[0];
      const { min, max } = u.scales.x;
      this.zoom = steps.length && (min > steps[0] || max < steps[steps.length - 1]) ? { min, max } : null;
      this.figure.dataset.zoomed = String(this.zoom !== null);
    }

    // A dashed line at the best evaluation's step, and a ring on its value, in the run's colour.
    markBest(u) {
      const ctx = u.ctx, px = uPlot.pxRatio, { left, top, width, height } = u.bbox;
      ctx.save();
      this.best.forEach((record, i) => {
        if (!record || !Number.isFinite(record[this.curve.key])) return;
        const x = u.valToPos(record.step, "x", true);
        if (x < left || x > left + width) return;
        ctx.strokeStyle = ctx.fillStyle = COLORS[i % COLORS.length];
        ctx.lineWidth = px;
        ctx.setLineDash([4 * px, 4 * px]);
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.font = `${11 * px}px system-ui, sans-serif`;
        const room = left + width - x > 30 * px; // at the last step the word goes left of the line
        ctx.textAlign = room ? "left" : "right";
        ctx.fillText("best", x + (room ? 3 : -3) * px, top + (12 + 12 * i) * px);
        const value = record[this.curve.key];
        if (this.log && value <= 0) return;
        ctx.lineWidth = 2 * px;
        ctx.beginPath();
        ctx.arc(x, u.valToPos(value, "y", true), 5 * px, 0, 2 * Math.PI);
        ctx.stroke();
      });
      ctx.restore();
    }

    describe() {
      const names = this.runs.map((r, i) => this.label(i)).join(", ");
      const steps = this.raw.flatMap(([s]) => s);
      const span = steps.length ? `steps ${Math.min(...steps)} to ${Math.max(...steps)}` : "no points yet";
      this.box.setAttribute("aria-label", `${this.curve.title} by step (${names}): ${span}. The table of points follows.`);
      const who = (i) => (this.runs[i].name ? `${this.runs[i].name}: ` : "");
      const note = (r, i) => `${who(i)}step ${r.step}, ${this.curve.noun} ${fmt(r[this.curve.key])}`;
      const notes = this.best.map((r, i) => r && note(r, i)).filter(Boolean);
      this.bestNote.hidden = !notes.length;
      this.bestNote.textContent = notes.length ? `Best evaluation (the adapter kept): ${notes.join("; ")}` : "";
      if (notes.length) this.figure.dataset.bestStep = String(this.best.find(Boolean).step);
    }

    // The points as a table, filled when opened (a long run has thousands).
    fillTable() {
      this.table.querySelector(".table-wrap")?.remove();
      if (!this.table.open) return;
      const [steps, ...columns] = uPlot.join(this.raw);
      const table = el("table");
      const head = el("tr");
      head.appendChild(el("th", { scope: "col" }, "step"));
      this.runs.forEach((r, i) => head.appendChild(el("th", { scope: "col" }, this.label(i))));
      table.appendChild(el("thead")).appendChild(head);
      const body = table.appendChild(el("tbody"));
      steps.forEach((step, j) => {
        const row = body.appendChild(el("tr"));
        row.appendChild(el("th", { scope: "row" }, String(step)));
        columns.forEach((values) => row.appendChild(el("td", {}, fmt(values[j]))));
      });
      this.table.appendChild(el("div", { class: "table-wrap" })).appendChild(table);
    }

    width() {
      return Math.max(160, Math.floor(this.box.clientWidth || this.figure.clientWidth - 20));
    }

    resize() {
      if (this.plot && Math.abs(this.plot.width - this.width()) >= 1) this.plot.setSize({ width: this.width(), height: HEIGHT });
    }
  }

  // Draw the four charts into `root` (or only the curves whose ids `only` lists: the sweep page draws
  // its trials' validation loss); returns {update(runs)} for new records (the details page polls).
  function mount(root, runs, only) {
    const help = "Hover a chart for values; drag across it to zoom into steps, double-click to zoom out.";
    root.replaceChildren(el("p", { class: "chart-help" }, help));
    const charts = CURVES.filter((curve) => !only || only.includes(curve.id)).map((curve) => new Chart(curve, root));
    const update = (next) => charts.forEach((chart) => chart.update(next));
    update(runs);
    return { update };
  }

  return { COLORS, fmt, mount };
})();
