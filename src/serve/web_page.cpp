#include "serve/web_page.h"

namespace ll::serve {

namespace {

// The page is kept here (not a separate file) so that the binary carries it and nothing is installed beside it.
const char kPage[] = R"PAGE(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LongLoRA chat</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 1.5rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .muted { color: #666; font-size: .9rem; }
  fieldset { border: 1px solid #ccc; border-radius: 6px; margin: .8rem 0; }
  textarea { width: 100%; box-sizing: border-box; font: inherit; }
  #log { border: 1px solid #ddd; border-radius: 6px; padding: .6rem; min-height: 8rem; white-space: pre-wrap; }
  .turn-user { color: #0b5394; margin-top: .6rem; }
  .turn-assistant { margin-top: .3rem; }
  #meter { height: .5rem; background: #eee; border-radius: 3px; overflow: hidden; }
  #meter > div { height: 100%; width: 0; background: #4a90d9; }
  button { font: inherit; padding: .3rem .9rem; }
  label { margin-right: 1rem; }
  input[type=number] { width: 5rem; }
</style>
</head>
<body>
<h1>LongLoRA chat</h1>
<div class="muted">Model <b id="model">…</b> · context <span id="context">…</span> tokens ·
  <span id="status">connecting…</span></div>
<fieldset>
  <legend>Material (optional): a text file the questions are about</legend>
  <input type="file" id="file" accept=".txt,.md,.text,text/plain">
  <span id="material-info" class="muted"></span>
</fieldset>
<fieldset>
  <legend>Question</legend>
  <textarea id="question" rows="3" placeholder="Ask about the material…"></textarea>
  <div style="margin-top:.4rem">
    <label>temperature <input type="number" id="temperature" value="0.6" min="0" max="2" step="0.1"></label>
    <label>top_p <input type="number" id="top_p" value="0.9" min="0.01" max="1" step="0.05"></label>
    <label>max tokens <input type="number" id="max_tokens" value="512" min="1" step="1"></label>
    <label id="key-label" style="display:none">API key <input type="password" id="api_key" size="12"></label>
  </div>
  <div style="margin-top:.4rem">
    <button id="ask">Ask</button> <button id="stop" disabled>Stop</button> <button id="reset">New conversation</button>
  </div>
</fieldset>
<div id="log"></div>
<p class="muted"><span id="speed"></span></p>
<div id="meter"><div></div></div>
<p class="muted" id="used"></p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let contextSize = 0, material = "", messages = [], controller = null;

function headers() {
  const h = {"Content-Type": "application/json"};
  const key = $("api_key").value;
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
function showUsed(tokens) {
  if (!contextSize) return;
  const pct = Math.min(100, 100 * tokens / contextSize);
  $("meter").firstElementChild.style.width = pct.toFixed(1) + "%";
  $("used").textContent = "context used: " + tokens + " of " + contextSize + " tokens (" + pct.toFixed(1) + "%)";
}
async function loadModel() {
  try {
    const r = await fetch("/v1/models", {headers: headers()});
    if (r.status === 401) { $("key-label").style.display = ""; $("status").textContent = "API key needed"; return; }
    if (!r.ok) { $("status").textContent = "model loading…"; setTimeout(loadModel, 1000); return; }
    const m = (await r.json()).data[0];
    contextSize = m.meta.context_size;
    $("model").textContent = m.id;
    $("context").textContent = contextSize;
    $("status").textContent = "ready";
  } catch (e) { $("status").textContent = "no server: " + e; setTimeout(loadModel, 2000); }
}
$("file").addEventListener("change", async () => {
  const f = $("file").files[0];
  if (!f) return;
  material = await f.text();
  messages = [];
  $("log").textContent = "";
  let info = f.name + ": " + material.length + " characters";
  try {
    const r = await fetch("/tokenize", {method: "POST", headers: headers(), body: JSON.stringify({content: material})});
    if (r.ok) { const n = (await r.json()).tokens.length; info += ", " + n + " tokens"; showUsed(n); }
  } catch (e) {}
  $("material-info").textContent = info;
});
$("reset").addEventListener("click", () => { messages = []; $("log").textContent = ""; showUsed(0); });
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("ask").addEventListener("click", ask);
$("question").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) ask(); });

function addTurn(cls, text) {
  const div = document.createElement("div");
  div.className = cls;
  div.textContent = text;
  $("log").appendChild(div);
  return div;
}
async function ask() {
  const question = $("question").value.trim();
  if (!question || controller) return;
  // The first turn carries the material, as LongLoRA's inference.py writes it: material + "\n" + question.
  const content = messages.length === 0 && material ? material + "\n" + question : question;
  messages.push({role: "user", content});
  addTurn("turn-user", "You: " + question);
  const out = addTurn("turn-assistant", "");
  out.id = "answer";
  const body = {messages, stream: true, stream_options: {include_usage: true},
                temperature: Number($("temperature").value), top_p: Number($("top_p").value),
                max_tokens: Number($("max_tokens").value)};
  controller = new AbortController();
  $("ask").disabled = true; $("stop").disabled = false;
  const t0 = performance.now();
  let first = 0, pieces = 0, answer = "", usage = null;
  try {
    const r = await fetch("/v1/chat/completions", {method: "POST", headers: headers(), body: JSON.stringify(body),
                                                   signal: controller.signal});
    if (!r.ok) {
      const e = await r.json().catch(() => ({error: {message: r.statusText}}));
      throw new Error(e.error ? e.error.message : r.statusText);
    }
    const reader = r.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (!first) first = performance.now();
          answer += delta.content;
          pieces++;
          out.textContent = answer;
          const secs = (performance.now() - first) / 1000;
          if (secs > 0) $("speed").textContent = (pieces / secs).toFixed(1) + " pieces/s while streaming";
        }
      }
    }
    messages.push({role: "assistant", content: answer});
    if (usage) {
      const t = usage.timings || {};
      $("speed").textContent = usage.completion_tokens + " tokens, decode " +
        (t.decode_tokens_per_second || 0).toFixed(1) + " tokens/s; prompt " + usage.prompt_tokens + " tokens (" +
        usage.prompt_tokens_details.cached_tokens + " from the cache) in " + (t.prefill_seconds || 0).toFixed(2) +
        " s; " + ((performance.now() - t0) / 1000).toFixed(1) + " s in all";
      showUsed(usage.total_tokens);
    }
  } catch (e) {
    messages.pop();
    out.textContent = answer + (e.name === "AbortError" ? " [stopped]" : " [error: " + e.message + "]");
  } finally {
    out.removeAttribute("id");
    controller = null;
    $("ask").disabled = false; $("stop").disabled = true;
  }
}
loadModel();
</script>
</body>
</html>
)PAGE";

}  // namespace

const char* web_page() { return kPage; }

}  // namespace ll::serve
