// The details page's "Try it" panel (templates/details.html, web/try_it_pages.py): a chat with this model,
// the answer streamed in as server-sent events read from a fetch() POST (EventSource cannot POST or
// send the CSRF header). The conversation lives only in the page: each Send posts the whole history,
// Reset forgets it. With "Compare with the base model" (chosen before the first message, so each
// side's history is its own answers) the base model answers the same messages beside it.
"use strict";

(function () {
  const panel = document.getElementById("try-it");
  if (!panel) return;
  const $ = (id) => document.getElementById(id);
  const form = $("try-form"), message = $("try-message"), maxTokens = $("try-max-tokens"), temperature = $("try-temperature");
  const compare = $("try-compare"), send = $("try-send"), stop = $("try-stop"), reset = $("try-reset");
  const errorBox = $("try-error"), status = $("try-status");
  const logs = { model: $("try-log"), base: $("try-base-log") };
  const url = `/console/api/models/${encodeURIComponent(panel.dataset.modelId)}/try-it`;
  const FINISH = { stop: "finished", length: "stopped at max tokens", cancelled: "stopped" };
  let turns = []; // {user, model: {text, el}, base: {text, el} | null}
  let running = null; // the AbortController of the answer being streamed

  function showError(text) {
    errorBox.textContent = text || "";
    errorBox.hidden = !text;
  }

  function setRunning(on) {
    send.disabled = on;
    stop.hidden = !on;
    compare.disabled = on || turns.length > 0; // each side keeps its own history: fixed until Reset
    status.textContent = on ? "Generating…" : "";
    panel.dataset.state = on ? "streaming" : "idle";
  }

  function entry(log, role, text) {
    const li = document.createElement("li");
    li.className = `try-${role}`;
    const who = document.createElement("span");
    who.className = "try-who";
    who.textContent = role === "user" ? "You" : "Model";
    const body = document.createElement("div");
    body.className = "try-text";
    body.textContent = text;
    li.append(who, body);
    log.append(li);
    return li;
  }

  // What is wrong with an input, in a sentence, or "" (the server checks the same bounds again).
  function numberProblem(input, name, integer) {
    const raw = input.value.trim(), min = Number(input.min), max = Number(input.max), value = Number(raw);
    const kind = integer ? "a whole number" : "a number";
    if (raw === "" || !Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max) {
      return `${name}: "${raw}" is not allowed; allowed: ${kind} from ${min} to ${max}.`;
    }
    return "";
  }

  function history(side) {
    const messages = [];
    for (const turn of turns) {
      messages.push({ role: "user", content: turn.user });
      const answer = turn[side];
      if (answer && answer.done && answer.text.trim()) messages.push({ role: "assistant", content: answer.text });
    }
    return messages;
  }

  async function refusal(response) {
    let text = "";
    try { text = (await response.json()).message || ""; } catch (_) { /* not JSON: say it in our words */ }
    if (response.status === 401) return "Your session ended: sign in again (reload the page).";
    if (response.status === 429) return `The server is busy: try again in a moment. ${text}`.trim();
    if (response.status === 409) return `This model cannot answer now: ${text}`;
    if (response.status === 404) return "This model is not in your tenancy any more (it may have been deleted).";
    return text ? `Not sent: ${text}` : `Not sent: the server answered ${response.status}.`;
  }

  function finish(answer, event) {
    answer.done = true;
    answer.el.dataset.finish = event.finishReason || "error";
    const meta = document.createElement("span");
    meta.className = "try-meta hint";
    const n = event.completionTokens;
    const tokens = typeof n === "number" ? `, ${n} token${n === 1 ? "" : "s"}` : "";
    meta.textContent = event.error ? event.error : `${FINISH[event.finishReason] || event.finishReason}${tokens}`;
    if (event.error) meta.className = "try-meta error";
    answer.el.append(meta);
  }

  async function stream(turn, controller) {
    const body = {
      messages: history("model"),
      maxTokens: Number(maxTokens.value),
      temperature: Number(temperature.value),
    };
    if (turn.base) body.baseMessages = history("base");
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": panel.dataset.csrf },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await refusal(response));
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const lines = buffer.slice(0, cut).split("\n").filter((l) => l.startsWith("data: "));
        buffer = buffer.slice(cut + 2);
        for (const line of lines) {
          const event = JSON.parse(line.slice(6));
          const answer = turn[event.side];
          if (!answer) continue;
          if (event.delta !== undefined) {
            answer.text += event.delta;
            answer.textEl.textContent = answer.text;
            answer.el.dataset.chars = String(answer.text.length);
          } else {
            finish(answer, event);
          }
        }
      }
    }
  }

  function newAnswer(side) {
    const el = entry(logs[side], "answer", "");
    el.querySelector(".try-who").textContent = side === "base" ? "Base model" : "This model";
    el.dataset.finish = "";
    return { text: "", done: false, el, textEl: el.querySelector(".try-text") };
  }

  async function onSend(event) {
    event.preventDefault();
    if (running) return;
    const text = message.value.trim();
    const problem = !text
      ? "Write a message first."
      : numberProblem(maxTokens, "Max tokens", true) || numberProblem(temperature, "Temperature", false);
    showError(problem);
    if (problem) return;
    const turn = { user: text, model: null, base: null, els: [entry(logs.model, "user", text)] };
    turns.push(turn);
    if (compare.checked) turn.els.push(entry(logs.base, "user", text));
    turn.model = newAnswer("model");
    if (compare.checked) turn.base = newAnswer("base");
    message.value = "";
    running = new AbortController();
    setRunning(true);
    try {
      await stream(turn, running);
      for (const side of ["model", "base"]) {
        if (turn[side] && !turn[side].done) finish(turn[side], { error: "The answer ended early: the connection was closed." });
      }
    } catch (err) {
      const stopped = running.signal.aborted;
      const answers = [turn.model, turn.base].filter(Boolean);
      if (!stopped && answers.every((a) => !a.done && !a.text)) {
        // Refused before any answer: the turn is taken back, the message put back to send again.
        turns.pop();
        for (const el of turn.els) el.remove();
        for (const a of answers) a.el.remove();
        message.value = text;
        showError(err instanceof TypeError ? "The connection to the server was lost: check it and send again." : err.message);
      } else {
        const why = stopped ? { finishReason: "cancelled" } : { error: "The answer ended early: the connection was lost." };
        for (const a of answers) if (!a.done) finish(a, why);
      }
    } finally {
      running = null;
      setRunning(false);
    }
  }

  form.addEventListener("submit", onSend);
  message.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
  stop.addEventListener("click", () => running && running.abort());
  reset.addEventListener("click", () => {
    if (running) running.abort();
    turns = [];
    logs.model.replaceChildren();
    logs.base.replaceChildren();
    showError("");
    setRunning(false);
    message.focus();
  });
  compare.addEventListener("change", () => {
    $("try-base-side").hidden = !compare.checked;
    panel.classList.toggle("comparing", compare.checked);
  });
  compare.dispatchEvent(new Event("change"));
  setRunning(false);
})();
