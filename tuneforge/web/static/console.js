// TuneForge console: live progress, the forms' checks (errors tied to their fields, a summary, the focus
// on the first invalid field), the dataset check, the models list's refresh and sign-in with an API key.
// The charts are charts.js (over the vendored uPlot), loaded by the pages that have them. Everything
// ships inside the package: the console must work offline.
"use strict";

// ---- model details: poll while the model trains ---------------------------------------------

function showProgress(progress, text) {
  // The line itself is the server's (queries.progress_text): what the run does now, the step, the time left.
  const bar = document.getElementById("progress-bar"), line = document.getElementById("progress-text");
  if (!bar) return;
  if (progress && progress.totalTrainingSteps) { bar.max = progress.totalTrainingSteps; bar.value = progress.step || 0; }
  if (text && line.textContent !== text) line.textContent = text;
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
  showProgress(live.progress, live.progressText);
  if (!live.live) return;
  const poll = async () => {
    try {
      const r = await fetch(`/console/api/models/${encodeURIComponent(data.modelId)}/live?since=${next}&after=${after}`, { credentials: "same-origin" });
      if (r.ok) {
        const update = await r.json();
        if (update.records.length) { records.push(...update.records); next = update.next; draw(); }
        log(update.log);
        showProgress(update.progress, update.progressText);
        if (update.state !== live.state) { location.reload(); return; }  // the server renders the outcome
      }
    } catch (err) { /* the server may be restarting: try again */ }
    setTimeout(poll, 1000);
  };
  setTimeout(poll, 1000);
}

// ---- forms: errors tied to their fields, a summary at the top, focus on the first invalid field ----

function showFieldError(input, errorBox, message) {
  // The error paragraph is the one the input names in aria-describedby; aria-invalid follows it.
  if (errorBox) errorBox.textContent = message || "";
  if (!input) return;
  if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
  input.classList.toggle("invalid", !!message);
}

function showSummary(form, problems) {
  // problems: [{message, input}], in the form's order. Screen readers hear the summary (role=alert).
  const box = document.getElementById("error-summary");
  if (!box) return;
  box.hidden = problems.length === 0;
  box.querySelector("h2").textContent = problems.length === 1 ? "There is a problem with this form" : `There are ${problems.length} problems with this form`;
  const list = box.querySelector("ul");
  list.replaceChildren(...problems.map(({ message, input }) => {
    const li = document.createElement("li"), a = document.createElement("a");
    a.textContent = message;
    if (input && input.id) { a.href = `#${input.id}`; a.addEventListener("click", (e) => { e.preventDefault(); input.focus(); }); li.append(a); }
    else li.textContent = message;
    return li;
  }));
}

function focusFirstInvalid(root) {
  const first = [...root.querySelectorAll('[aria-invalid="true"]')].find((el) => !el.closest("[hidden]") && !el.disabled);
  if (first) first.focus();
  else { const box = document.getElementById("error-summary"); if (box && !box.hidden) box.focus(); }
}

function checkField(input) {
  // The catalog's rule for this field (data-* attributes), worded as the server words it; the server checks again on submit.
  const text = input.value.trim(), d = input.dataset;
  if (text === "") return "";
  const value = Number(text), allowed = `allowed: ${d.allowed}`;
  if (d.type === "int" && !/^[+-]?\d+$/.test(text)) return `${d.field}: ${text} is not an integer; ${allowed}`;
  if (!Number.isFinite(value)) return `${d.field}: ${text} is not a number; ${allowed}`;
  const below = d.min !== undefined && (value < Number(d.min) || (d.minExclusive === "true" && value === Number(d.min)));
  const above = d.max !== undefined && (value > Number(d.max) || (d.maxExclusive === "true" && value === Number(d.max)));
  if ((d.tunable === "false" && value !== Number(d.default)) || below || above) return `${d.field}: ${text} is not allowed; ${allowed}`;
  return "";
}

function bytes(n) {
  return n < 1024 ? `${n} bytes` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;
}

function createPage(form) {
  const base = form.querySelector("#baseModelId");
  const planText = document.getElementById("plan-text"), checkText = document.getElementById("dataset-check");
  const datasetError = document.getElementById("err-dataset"), datasetProblems = document.getElementById("dataset-problems");
  const fileInput = form.elements.datasetFile, kept = form.elements.keptUpload.value;
  const csrf = form.elements.csrf.value, maxCheck = Number(form.dataset.maxCheckBytes);
  let fileExamples = null, checkedFile = null, planTimer = null, planAsked = 0;
  const activeGroup = () => form.querySelector(`fieldset.hyperparameters[data-group="${base.selectedOptions[0].dataset.group}"]`);
  const source = () => form.querySelector('input[name="datasetSource"]:checked').value;
  const datasetInput = () => (source() === "upload" ? fileInput : form.elements.objectName);
  // The training method: DPO's own fields (beta) are shown, checked and sent only for preference tuning.
  const method = () => form.querySelector('input[name="method"]:checked').value;
  const dpoFields = form.querySelector('fieldset.method-fields[data-method="dpo"]');

  function showDataset(summary, problems) {
    datasetError.textContent = summary || "";
    datasetProblems.replaceChildren(...(problems || []).map((p) => { const li = document.createElement("li"); li.textContent = p; return li; }));
    for (const input of [fileInput, form.elements.objectName]) showFieldError(input, null, "");
    showFieldError(datasetInput(), null, summary);
  }
  function showGroup() {
    // Only the chosen model's fieldset is enabled, so only its fields are submitted.
    for (const fs of form.querySelectorAll("fieldset.hyperparameters")) {
      const on = fs === activeGroup();
      fs.hidden = !on; fs.disabled = !on;
    }
  }
  function showMethod() {
    const on = method() === "dpo";
    dpoFields.hidden = !on; dpoFields.disabled = !on;
  }
  function showSource() {
    for (const div of form.querySelectorAll("[data-source]")) div.hidden = div.dataset.source !== source();
  }
  function hyperInputs() {
    const own = [...activeGroup().querySelectorAll("input[data-field]")];
    return method() === "dpo" ? [...own, ...dpoFields.querySelectorAll("input[data-field]")] : own;
  }
  function errorBox(input) { return document.getElementById(`err-${input.id}`); }
  function checkAll() {
    const problems = [];
    for (const input of hyperInputs()) {
      const message = checkField(input);
      showFieldError(input, errorBox(input), message);
      if (message) problems.push({ message, input });
    }
    return problems;
  }
  async function checkFile(file) {
    // The server's own validator on the chosen file (nothing is kept): counts and problems with line and column.
    fileExamples = null; checkedFile = file;
    showDataset("", []);
    if (!file) { checkText.textContent = ""; schedulePlan(); return; }
    if (file.size > maxCheck) { checkText.textContent = `${file.name}: ${bytes(file.size)}, too large to check here; the server checks it when you create the model.`; schedulePlan(); return; }
    checkText.textContent = `checking ${file.name}…`;
    try {
      const params = new URLSearchParams({ baseModelId: base.value, name: file.name, method: method() });
      const r = await fetch(`/console/api/dataset-check?${params}`, { method: "POST", body: file, credentials: "same-origin",
        headers: { "content-type": "application/octet-stream", "x-csrf-token": csrf } });
      const answer = await r.json();
      if (checkedFile !== file) return;  // another file was chosen meanwhile
      if (answer.n !== undefined) { fileExamples = answer.n; checkText.textContent = `${file.name}: ${answer.n} examples, checked by the server.`; }
      else if (answer.problems) { checkText.textContent = ""; showDataset(answer.summary, answer.problems); }
      else checkText.textContent = `${file.name}: ${answer.message}`;
    } catch (err) {
      checkText.textContent = `${file.name} could not be checked now (${err.message || err}); the server checks it when you create the model.`;
    }
    schedulePlan();
  }
  async function refreshPlan() {
    const params = new URLSearchParams({ baseModelId: base.value, method: method() });
    for (const input of hyperInputs()) params.set(input.dataset.field, input.value);
    const chosen = fileInput.files[0];
    if (source() === "upload" && chosen) {
      if (fileExamples === null) { planText.textContent = "choose a valid dataset to see the figure."; return; }
      params.set("n", fileExamples);
    } else {
      const bucket = source() === "upload" ? "datasets" : form.elements.bucketName.value.trim();
      const object = source() === "upload" ? kept : form.elements.objectName.value.trim();
      if (!bucket || !object) { planText.textContent = source() === "upload" ? "choose a dataset to see the figure." : "name the dataset object to see the figure."; return; }
      params.set("bucketName", bucket); params.set("objectName", object);
    }
    const asked = ++planAsked;
    const r = await fetch(`/console/api/plan?${params}`, { credentials: "same-origin" });
    if (!r.ok || asked !== planAsked) return;  // a later edit asked again: this answer is stale
    const plan = await r.json();
    if (!(source() === "upload" && chosen)) showDataset(plan.errors.dataset || "", plan.datasetProblems || []);
    for (const input of hyperInputs()) showFieldError(input, errorBox(input), plan.errors[input.dataset.field] || checkField(input));
    planText.textContent = plan.totalTrainingSteps === undefined
      ? "fix the fields marked above to see the figure."
      : `${plan.n} examples → ${plan.nTrain} training + ${plan.nVal} validation; ${plan.stepsPerEpoch} steps per epoch; totalTrainingSteps = ${plan.totalTrainingSteps}`;
    planText.dataset.steps = plan.totalTrainingSteps === undefined ? "" : String(plan.totalTrainingSteps);
  }
  const schedulePlan = () => { clearTimeout(planTimer); planTimer = setTimeout(refreshPlan, 250); };

  base.addEventListener("change", () => { showGroup(); checkAll(); if (fileInput.files[0]) checkFile(fileInput.files[0]); else schedulePlan(); });
  for (const radio of form.querySelectorAll('input[name="method"]')) {
    radio.addEventListener("change", () => { showMethod(); checkAll(); if (fileInput.files[0]) checkFile(fileInput.files[0]); else schedulePlan(); });
  }
  for (const radio of form.querySelectorAll('input[name="datasetSource"]')) radio.addEventListener("change", () => { showSource(); showDataset("", []); schedulePlan(); });
  for (const name of ["bucketName", "objectName"]) form.elements[name].addEventListener("input", schedulePlan);
  for (const input of form.querySelectorAll("input[data-field]")) input.addEventListener("input", () => { checkAll(); schedulePlan(); });
  fileInput.addEventListener("change", () => checkFile(fileInput.files[0]));
  form.addEventListener("submit", (event) => {
    // Fields the page can rule out block the submit; a dataset's problems do not (the server decides).
    const problems = checkAll();
    const missing = source() === "upload" && !fileInput.files[0] && !kept;
    if (!problems.length && !missing) return;
    event.preventDefault();
    if (missing) {
      const message = "Choose a JSONL file to upload (or name an object in Object Storage).";
      showFieldError(fileInput, datasetError, message);
      problems.unshift({ message, input: fileInput });
    } else if (datasetError.textContent) {
      const first = datasetProblems.querySelector("li");
      problems.unshift({ message: datasetError.textContent + (first ? ` ${first.textContent}` : ""), input: datasetInput() });
    }
    showSummary(form, problems);
    focusFirstInvalid(form);
  });
  showGroup(); showMethod(); showSource(); checkAll(); schedulePlan();
}

// ---- the models list refreshes itself while a model trains (the server renders the rows) ----------

function refreshingList(table) {
  const poll = async () => {
    try {
      const r = await fetch(location.href, { credentials: "same-origin" });
      if (r.ok) {
        const fresh = new DOMParser().parseFromString(await r.text(), "text/html").getElementById("custom-models");
        if (fresh) {
          // Keep what the user ticked for comparing.
          const ticked = new Set([...table.querySelectorAll('input[name="id"]:checked')].map((box) => box.value));
          table.tBodies[0].replaceWith(fresh.tBodies[0]);
          for (const box of table.querySelectorAll('input[name="id"]')) box.checked = ticked.has(box.value);
          if (fresh.dataset.live !== "true") { delete table.dataset.live; return; }
        }
      }
    } catch (err) { /* the server may be restarting: try again */ }
    setTimeout(poll, 2000);
  };
  setTimeout(poll, 2000);
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

// What can be wrong with a chosen key file, in words (a failed import alone says only "DataError").
function keyProblem(pem) {
  if (/BEGIN (RSA )?PUBLIC KEY/.test(pem)) return "this is a public key: choose the private half (the file without _public in its name)";
  if (/ENCRYPTED/.test(pem)) return "this key is protected by a passphrase, which the browser cannot use: make an unencrypted copy with openssl rsa -in KEY -out PLAIN";
  if (!/-----BEGIN (RSA )?PRIVATE KEY-----/.test(pem)) return "this is not a PEM private key (it should start with -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)";
  return "";
}

function keyLoginPage(form) {
  const fileInput = form.elements.keyFile, error = document.getElementById("err-keyFile");
  const fail = (message) => { showFieldError(fileInput, error, message); fileInput.focus(); };
  fileInput.addEventListener("change", () => showFieldError(fileInput, error, ""));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = fileInput.files[0];
    if (!file) return fail("Choose your private key file first.");
    if (!window.isSecureContext || !window.crypto || !crypto.subtle) return fail("Signing in with a key needs this page on https:// (or http://localhost): the browser offers its signing only there.");
    if (file.size > 64 * 1024) return fail(`${file.name} is ${bytes(file.size)}: too large to be a PEM private key.`);
    const pem = await file.text();
    const problem = keyProblem(pem);
    if (problem) return fail(`${file.name}: ${problem}.`);
    let key;
    try {
      let der = pemBody(pem);
      if (/BEGIN RSA PRIVATE KEY/.test(pem)) der = pkcs1ToPkcs8(der);
      key = await crypto.subtle.importKey("pkcs8", der, { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["sign"]);
    } catch (err) {
      return fail(`${file.name}: the browser could not read this key; it must be an RSA private key in PEM (PKCS#8 or PKCS#1), as openssl genrsa writes it.`);
    }
    const signature = await crypto.subtle.sign("RSASSA-PKCS1-v1_5", key, new TextEncoder().encode(form.dataset.challenge));
    form.elements.signature.value = btoa(String.fromCharCode(...new Uint8Array(signature)));
    fileInput.disabled = true;  // never sent: only the signature leaves the browser
    form.submit();
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
  const list = document.querySelector('#custom-models[data-live="true"]');
  if (list) refreshingList(list);
  // A form the server sent back with errors: the focus goes to the first invalid field.
  const summary = document.getElementById("error-summary");
  if (summary && !summary.hidden) focusFirstInvalid(document);
  const keyForm = document.getElementById("key-login");
  if (keyForm) keyLoginPage(keyForm);
});
