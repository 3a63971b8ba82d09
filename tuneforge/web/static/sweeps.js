// TuneForge console, sweep pages: the new-sweep form (only the chosen model's hyperparameters are
// shown and sent; the dataset's source), the sweeps list's refresh, and a sweep's page: its plots
// (each searched hyperparameter against the validation loss, drawn with the vendored uPlot; the trials'
// validation-loss curves overlaid by charts.js) and its refresh while the sweep runs. The server renders
// everything else; console.js ties errors to fields and moves the focus.
"use strict";

// ---- the new-sweep form ---------------------------------------------------------------------

function sweepForm(form) {
  const base = form.querySelector("#baseModelId");
  const source = () => form.querySelector('input[name="datasetSource"]:checked').value;
  function showGroup() {
    // A disabled fieldset's inputs are not submitted: only the chosen model's fields reach the server.
    const group = base.selectedOptions[0].dataset.group;
    for (const fs of form.querySelectorAll("fieldset.hyperparameters")) {
      const on = fs.dataset.group === group;
      fs.hidden = !on; fs.disabled = !on;
    }
  }
  function showSource() {
    for (const div of form.querySelectorAll("[data-source]")) div.hidden = div.dataset.source !== source();
  }
  base.addEventListener("change", showGroup);
  for (const radio of form.querySelectorAll('input[name="datasetSource"]')) radio.addEventListener("change", showSource);
  showGroup(); showSource();
}

// ---- a sweep's plots --------------------------------------------------------------------------

const SCATTER_HEIGHT = 200;

function scatterWidth(box) {
  return Math.max(160, Math.floor(box.clientWidth || 300));
}

// One plot per searched hyperparameter: its value (x; log when the space searches it on a log scale)
// against each finished or pruned trial's validation loss (y). Pruned trials are hollow points.
function scatter(root, name, dim, trials) {
  const figure = document.createElement("figure");
  figure.className = "chart scatter";
  figure.id = `scatter-${name}`;
  const caption = document.createElement("figcaption");
  caption.innerHTML = "<b></b>";
  caption.querySelector("b").textContent = `${name} against validation loss`;
  const box = document.createElement("div");
  box.className = "chart-plot";
  box.setAttribute("role", "img");
  figure.append(caption, box);
  root.appendChild(figure);
  const shown = trials.filter((t) => Number.isFinite(t.validationLoss) && Number.isFinite(t.params[name]));
  const done = shown.filter((t) => t.state !== "PRUNED"), pruned = shown.filter((t) => t.state === "PRUNED");
  figure.dataset.points = String(shown.length);
  const words = shown.map((t) => `trial ${t.number}: ${name} ${TuneCharts.fmt(t.params[name])}, loss ${TuneCharts.fmt(t.validationLoss)}`);
  box.setAttribute("aria-label", `${name} against validation loss: ${words.join("; ") || "no finished trials yet"}.`);
  if (!shown.length) {
    const empty = document.createElement("p");
    empty.className = "no-data"; empty.textContent = "no finished trials yet";
    figure.appendChild(empty);
    return null;
  }
  // uPlot wants one ascending x column: every trial's x, each series null where it has no point.
  const xs = [...new Set(shown.map((t) => t.params[name]))].sort((a, b) => a - b);
  const column = (list) => xs.map((x) => { const t = list.find((p) => p.params[name] === x); return t ? t.validationLoss : null; });
  const log = !dim.values && dim.log;
  const axis = { stroke: "#6b7280", grid: { stroke: "#f0f0f0" }, font: "11px system-ui, sans-serif", labelFont: "12px system-ui, sans-serif" };
  const tick = (u, splits) => splits.map((v) => (v === null || v === undefined ? "" : TuneCharts.fmt(v)));
  const point = (fill) => ({ show: true, size: 9, fill, stroke: TuneCharts.COLORS[0] });
  const opts = {
    width: scatterWidth(box), height: SCATTER_HEIGHT,
    scales: { x: { time: false, ...(log ? { distr: 3 } : {}) }, y: {} },
    axes: [{ ...axis, label: name, labelSize: 18, size: 32, values: tick }, { ...axis, label: "validation loss", labelSize: 18, size: 56, values: tick }],
    series: [
      { label: name, value: (u, v) => TuneCharts.fmt(v) },
      { label: "finished", stroke: TuneCharts.COLORS[0], paths: () => null, points: point(TuneCharts.COLORS[0]), value: (u, v) => TuneCharts.fmt(v) },
      { label: "pruned", stroke: TuneCharts.COLORS[0], paths: () => null, points: point("#ffffff"), value: (u, v) => TuneCharts.fmt(v) },
    ],
  };
  const plot = new uPlot(opts, [xs, column(done), column(pruned)], box);
  figure.uplot = plot;
  new ResizeObserver(() => { if (Math.abs(plot.width - scatterWidth(box)) >= 1) plot.setSize({ width: scatterWidth(box), height: SCATTER_HEIGHT }); }).observe(box);
  return plot;
}

function drawScatters(data) {
  const root = document.getElementById("scatters");
  for (const figure of root.querySelectorAll("figure")) { if (figure.uplot) figure.uplot.destroy(); }
  root.replaceChildren();
  if (!data.searched.length) {
    const p = document.createElement("p"); p.className = "hint"; p.textContent = "Nothing was searched: only the defaults ran.";
    root.appendChild(p);
  }
  for (const name of data.searched) scatter(root, name, data.space[name] || {}, data.trials);
}

function sweepPage(live) {
  let data = JSON.parse(document.getElementById("sweep-data").textContent);
  const chartRoot = document.querySelector("[data-charts]");
  const curves = TuneCharts.mount(chartRoot, data.runs, ["chart-val-loss"]);
  drawScatters(data);
  const signature = (d) => JSON.stringify([d.trials, d.runs.map((r) => r.records.length)]);
  const poll = async () => {
    try {
      const r = await fetch(location.href, { credentials: "same-origin" });
      if (r.ok) {
        const fresh = new DOMParser().parseFromString(await r.text(), "text/html").getElementById("sweep-live");
        if (fresh) {
          const next = JSON.parse(fresh.querySelector("#sweep-data").textContent);
          // The server renders the state, the ranking and the actions; only a region with the focus in it is left alone.
          if (!live.contains(document.activeElement) || document.activeElement === document.body) {
            live.replaceWith(fresh);
            live = fresh;
            // console.js asked "are you sure?" on the forms it found at load; the fresh ones ask too.
            for (const f of live.querySelectorAll("form[data-confirm]")) {
              f.addEventListener("submit", (event) => { if (!confirm(f.dataset.confirm)) event.preventDefault(); });
            }
          }
          if (signature(next) !== signature(data)) { curves.update(next.runs); drawScatters(next); }
          data = next;
          if (!next.live) return;
        }
      }
    } catch (err) { /* the server may be restarting: try again */ }
    setTimeout(poll, 2000);
  };
  if (live.dataset.live === "true") setTimeout(poll, 2000);
}

// ---- the sweeps list refreshes its rows while a sweep runs ------------------------------------

function refreshingSweeps(table) {
  const poll = async () => {
    try {
      const r = await fetch(location.href, { credentials: "same-origin" });
      if (r.ok) {
        const fresh = new DOMParser().parseFromString(await r.text(), "text/html").getElementById("sweeps");
        if (fresh) {
          table.tBodies[0].replaceWith(fresh.tBodies[0]);
          if (fresh.dataset.live !== "true") { delete table.dataset.live; return; }
        }
      }
    } catch (err) { /* try again */ }
    setTimeout(poll, 2000);
  };
  setTimeout(poll, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("sweep-form");
  if (form) sweepForm(form);
  const live = document.getElementById("sweep-live");
  if (live) sweepPage(live);
  const list = document.querySelector('#sweeps[data-live="true"]');
  if (list) refreshingSweeps(list);
});
