// TuneForge console: live progress, the create form's checks and sign-in with an API key. The charts
// are charts.js (over the vendored uPlot), loaded by the pages that have them. Everything ships inside
// the package: the console must work offline.
"use strict";

// ---- model details: poll while the model trains ---------------------------------------------

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(r).padStart(2, "0")}`;
}

function showProgress(progress, state) {
  const bar = document.getElementById("progress-bar"), text = document.getElementById("progress-text");
  if (!bar || !progress) return;
  const total = progress.totalTrainingSteps;
  if (total) { bar.max = total; bar.value = progress.step || 0; }
  const parts = [total ? `step ${progress.step || 0} / ${total}` : "loading the model…"];
  if (typeof progress.epoch === "number" && total) parts.push(`epoch ${progress.epoch.toFixed(2)}`);
  if (progress.phase) parts.push(progress.phase);
  if (typeof progress.etaSeconds === "number" && progress.phase === "training") parts.push(`ETA ${duration(progress.etaSeconds)}`);
  if (state === "DELETING") parts.push("stopping…");
  text.textContent = parts.join(" · ");
}

function appendLog(entries) {
  const log = document.getElementById("log");
  for (const e of entries) {
    const li = document.createElement("li"), time = document.createElement("time");
    if (e.error) li.className = "error";
    li.dataset.id = e.id;
    time.textContent = e.time;
    li.append(time, " " + (e.code ? `[${e.code}] ` : "") + e.message);
    log.appendChild(li);
  }
}

function detailsPage(data, chartRoot) {
  const live = data.live;
  const records = live.records.slice();
  let next = live.next, after = 0;
  const charts = TuneCharts.mount(chartRoot, [{ name: "", records }]);
  const draw = () => charts.update([{ name: "", records }]);
  const log = (entries) => { appendLog(entries); if (entries.length) after = entries[entries.length - 1].id; };
  log(live.log);
  showProgress(live.progress, live.state);
  if (!live.live) return;
  const poll = async () => {
    try {
      const r = await fetch(`/console/api/models/${encodeURIComponent(data.modelId)}/live?since=${next}&after=${after}`, { credentials: "same-origin" });
      if (r.ok) {
        const update = await r.json();
        if (update.records.length) { records.push(...update.records); next = update.next; draw(); }
        log(update.log);
        showProgress(update.progress, update.state);
        if (update.state !== live.state) { location.reload(); return; }  // the server renders the outcome
      }
    } catch (err) { /* the server may be restarting: try again */ }
    setTimeout(poll, 1000);
  };
  setTimeout(poll, 1000);
}

// ---- create form ----------------------------------------------------------------------------

function checkField(input) {
  // The catalog's rule for this field (data-* attributes); the server checks again on submit.
  const text = input.value.trim(), d = input.dataset;
  if (text === "") return "";
  const value = Number(text);
  const allowed = `allowed: ${d.allowed}`;
  if (!Number.isFinite(value)) return `${d.field}: must be a number; ${allowed}`;
  if (d.type === "int" && !/^[+-]?\d+$/.test(text)) return `${d.field}: must be an integer; ${allowed}`;
  if (d.tunable === "false" && value !== Number(d.default)) return `${d.field}: ${allowed}`;
  if (d.min !== undefined && (value < Number(d.min) || (d.minExclusive === "true" && value === Number(d.min)))) return `${d.field}: ${text} is not allowed; ${allowed}`;
  if (d.max !== undefined && (value > Number(d.max) || (d.maxExclusive === "true" && value === Number(d.max)))) return `${d.field}: ${text} is not allowed; ${allowed}`;
  return "";
}

function createPage(form) {
  const base = form.querySelector("#baseModelId");
  const planText = document.getElementById("plan-text");
  let fileLines = null, planTimer = null;
  const activeGroup = () => form.querySelector(`fieldset.hyperparameters[data-group="${base.selectedOptions[0].dataset.group}"]`);
  const source = () => form.querySelector('input[name="datasetSource"]:checked').value;
  const errorFor = (name, scope) => (scope || form).querySelector(`[data-error-for="${name}"]`);
  const setError = (name, message, scope) => { const p = errorFor(name, scope); if (p) p.textContent = message || ""; };

  function showGroup() {
    // Only the chosen model's fieldset is enabled, so only its fields are submitted.
    for (const fs of form.querySelectorAll("fieldset.hyperparameters")) {
      const on = fs === activeGroup();
      fs.hidden = !on; fs.disabled = !on;
    }
  }
  function showSource() {
    for (const div of form.querySelectorAll("[data-source]")) div.hidden = div.dataset.source !== source();
  }
  function checkAll() {
    let ok = true;
    for (const input of activeGroup().querySelectorAll("input[data-field]")) {
      const message = checkField(input);
      setError(input.dataset.field, message, activeGroup());
      input.classList.toggle("invalid", !!message);
      if (message) ok = false;
    }
    return ok;
  }
  async function refreshPlan() {
    const params = new URLSearchParams({ baseModelId: base.value });
    for (const input of activeGroup().querySelectorAll("input[data-field]")) params.set(input.dataset.field, input.value);
    if (source() === "upload") {
      if (fileLines === null) { planText.textContent = "choose a dataset to see the figure."; return; }
      params.set("n", fileLines);
    } else {
      const bucket = form.elements.bucketName.value.trim(), object = form.elements.objectName.value.trim();
      if (!bucket || !object) { planText.textContent = "name the dataset object to see the figure."; return; }
      params.set("bucketName", bucket); params.set("objectName", object);
    }
    const r = await fetch(`/console/api/plan?${params}`, { credentials: "same-origin" });
    if (!r.ok) return;
    const plan = await r.json();
    setError("dataset", plan.errors.dataset || "");
    for (const [field, message] of Object.entries(plan.errors)) if (field !== "dataset") setError(field, message, activeGroup());
    planText.textContent = plan.totalTrainingSteps === undefined
      ? "fix the fields marked above to see the figure."
      : `${plan.n} examples → ${plan.nTrain} training + ${plan.nVal} validation; ${plan.stepsPerEpoch} steps per epoch; totalTrainingSteps = ${plan.totalTrainingSteps}`;
    planText.dataset.steps = plan.totalTrainingSteps === undefined ? "" : String(plan.totalTrainingSteps);
  }
  const schedulePlan = () => { clearTimeout(planTimer); planTimer = setTimeout(refreshPlan, 250); };

  base.addEventListener("change", () => { showGroup(); checkAll(); schedulePlan(); });
  for (const radio of form.querySelectorAll('input[name="datasetSource"]')) radio.addEventListener("change", () => { showSource(); schedulePlan(); });
  for (const name of ["bucketName", "objectName"]) form.elements[name].addEventListener("input", schedulePlan);
  for (const input of form.querySelectorAll("input[data-field]")) input.addEventListener("input", () => { checkAll(); schedulePlan(); });
  form.elements.datasetFile.addEventListener("change", async (event) => {
    const file = event.target.files[0];
    // Examples = non-blank lines, as the server counts them (bad lines are named when it reads the file).
    fileLines = file ? (await file.text()).split("\n").filter((line) => line.trim() !== "").length : null;
    schedulePlan();
  });
  form.addEventListener("submit", (event) => { if (!checkAll()) event.preventDefault(); });
  showGroup(); showSource(); checkAll(); schedulePlan();
}

// ---- sign in with an API key ----------------------------------------------------------------

function pemBody(pem) {
  const b64 = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

function derLength(n) {
  if (n < 128) return [n];
  const bytes = [];
  while (n > 0) { bytes.unshift(n & 0xff); n >>= 8; }
  return [0x80 | bytes.length, ...bytes];
}

// WebCrypto imports PKCS#8 only; `openssl genrsa` (1.x) writes PKCS#1: wrap it in a PKCS#8 envelope.
function pkcs1ToPkcs8(pkcs1) {
  const algorithm = [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
  const octets = [0x04, ...derLength(pkcs1.length), ...pkcs1];
  const body = [0x02, 0x01, 0x00, ...algorithm, ...octets];
  return new Uint8Array([0x30, ...derLength(body.length), ...body]);
}

function keyLoginPage(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fileInput = form.elements.keyFile, error = form.querySelector('[data-error-for="keyFile"]');
    try {
      const pem = await fileInput.files[0].text();
      if (/ENCRYPTED/.test(pem)) throw new Error("encrypted keys are not supported here; use an unencrypted copy");
      let der = pemBody(pem);
      if (/BEGIN RSA PRIVATE KEY/.test(pem)) der = pkcs1ToPkcs8(der);
      const key = await crypto.subtle.importKey("pkcs8", der, { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["sign"]);
      const signature = await crypto.subtle.sign("RSASSA-PKCS1-v1_5", key, new TextEncoder().encode(form.dataset.challenge));
      form.elements.signature.value = btoa(String.fromCharCode(...new Uint8Array(signature)));
      fileInput.disabled = true;  // never sent: only the signature leaves the browser
      form.submit();
    } catch (err) {
      error.textContent = `Could not sign with this file: ${err.message || err}` + (window.isSecureContext ? "" : " (signing needs https or localhost)");
    }
  });
}

// ---- the account menu (a narrow screen's) closes as menus do: a click elsewhere or Escape ------

function accountMenu(menu) {
  document.addEventListener("click", (event) => { if (menu.open && !menu.contains(event.target)) menu.open = false; });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && menu.open) { menu.open = false; menu.querySelector("summary").focus(); }
  });
}

// ---- wiring ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => { if (!confirm(form.dataset.confirm)) event.preventDefault(); });
  }
  const menu = document.querySelector(".account-menu");
  if (menu) accountMenu(menu);
  const chartRoot = document.querySelector("[data-charts]");
  const liveData = document.getElementById("live-data");
  if (liveData) detailsPage(JSON.parse(liveData.textContent), chartRoot);
  const compareData = document.getElementById("compare-data");
  if (compareData) {
    const d = JSON.parse(compareData.textContent);
    TuneCharts.mount(chartRoot, d.runs.map((records, i) => ({ name: d.names[i], records })));
    for (const swatch of document.querySelectorAll(".swatch")) swatch.style.background = TuneCharts.COLORS[Number(swatch.dataset.series) % TuneCharts.COLORS.length];
  }
  const createForm = document.getElementById("create-form");
  if (createForm) createPage(createForm);
  const keyForm = document.getElementById("key-login");
  if (keyForm) keyLoginPage(keyForm);
});
