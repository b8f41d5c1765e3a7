// Entry point: tabs (driven by the URL), service readiness, the API key, and each page's set-up.

import { api, getKey, Problem, setKey } from "./api.js";
import { $, h, showProblem } from "./dom.js";
import { initDomains, refreshDomains } from "./domains.js";
import { initEffects } from "./effects.js";
import { explainNow, initExplain } from "./explain.js";
import { initGlossary } from "./glossary.js";
import { showJobs } from "./jobs.js";
import { buildParamFields, loadCatalog, writeParams } from "./params.js";

const TABS = ["explain", "effects", "domains", "jobs", "keys"];
// Buttons that need the service (its catalog) before they can do anything.
const NEEDS_SERVICE = ["explain-submit", "effects-submit", "domain-submit"];
let serviceReady = false;

// The URL is the state: "#tab", or "#explain?text=…&concept=…" for a shareable explanation.
function parseHash() {
  const raw = location.hash.slice(1);
  const at = raw.indexOf("?");
  const name = at < 0 ? raw : raw.slice(0, at);
  const query = at < 0 ? null : new URLSearchParams(raw.slice(at + 1));
  return { tab: TABS.includes(name) ? name : "explain", query };
}

function select(name, { focus = false, push = true } = {}) {
  for (const t of TABS) {
    const on = t === name;
    const tab = $(`tab-${t}`);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`page-${t}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (name === "domains" && serviceReady) refreshDomains();
  showJobs(name === "jobs");
  // A new history entry per tab the user picks, so Back returns to the previous one.
  if (push && parseHash().tab !== name) history.pushState(null, "", `#${name}`);
}

function initTabs() {
  TABS.forEach((t, i) => {
    const tab = $(`tab-${t}`);
    tab.addEventListener("click", () => select(t));
    // Arrow keys move between tabs (the WAI-ARIA tabs pattern); Tab moves into the page.
    tab.addEventListener("keydown", (ev) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
      if (step) select(TABS[(i + step + TABS.length) % TABS.length], { focus: true });
      else if (ev.key === "Home") select(TABS[0], { focus: true });
      else if (ev.key === "End") select(TABS[TABS.length - 1], { focus: true });
    });
  });
  // Back and Forward (and a link or an edited URL) switch tabs and restore a shared explanation.
  window.addEventListener("popstate", () => followHash());
  window.addEventListener("hashchange", () => followHash());
  if (!ownedElsewhere()) select(parseHash().tab, { push: false });
}

let shown = ""; // the explanation query the page last ran or restored
// A hash naming a page another module built (#report/..., #compare/...) is that module's to show.
function ownedElsewhere() {
  const name = location.hash.slice(1).split(/[/?]/)[0];
  return name !== "" && !TABS.includes(name) && document.getElementById(`page-${name}`) !== null;
}

function followHash() {
  if (ownedElsewhere()) return;
  const { tab, query } = parseHash();
  select(tab, { push: false });
  if (tab === "explain" && query && serviceReady && query.toString() !== shown) restoreExplanation(query);
}

function restoreExplanation(query) {
  shown = query.toString();
  $("explain-text").value = query.get("text") || "";
  writeParams("explain", {
    domain: query.get("domain"), classifier: query.get("classifier"), concept: query.get("concept"),
    target: query.get("target"), source: query.get("source"), method: query.get("method"),
    llm: query.get("llm"), k: query.get("k"),
  });
  explainNow(recordExplanation);
}

// Every explanation run gets its own URL: copy it to share the result, Back returns to the one before.
function recordExplanation(body) {
  const q = new URLSearchParams();
  q.set("text", body.text);
  const iv = body.intervention;
  q.set("concept", iv.concept);
  q.set("target", iv.target);
  if (iv.source) q.set("source", iv.source);
  for (const k of ["domain", "classifier", "method", "llm"]) if (typeof body[k] === "string") q.set(k, body[k]);
  q.set("k", String(body.top_k));
  shown = q.toString();
  if (location.hash !== `#explain?${shown}`) history.pushState(null, "", `#explain?${shown}`);
}

// Controls that need the service are disabled, with the reason beside them, until it is ready.
function waitReason(reason) {
  for (const id of NEEDS_SERVICE) {
    const button = $(id);
    let why = $(`${id}-why`);
    if (!why) {
      why = h("small", { id: `${id}-why`, class: "wait-reason", role: "status" });
      button.after(why);
      button.setAttribute("aria-describedby", why.id);
    }
    why.textContent = reason || "";
    why.hidden = !reason;
    button.disabled = Boolean(reason);
  }
}

// Whether the service asks for keys at all: an anonymous call to a route that needs one.
async function keysOn() {
  const resp = await fetch("v1/classifiers", { headers: { Accept: "application/json" } });
  if (resp.status === 401) return true;
  if (resp.ok) return false;
  throw new Problem(resp.status, await resp.json().catch(() => ({})));
}

async function checkKey() {
  const mode = $("key-mode"), status = $("key-status");
  showProblem($("key-error"), null);
  let on;
  try {
    on = await keysOn();
  } catch (e) {
    mode.textContent = "Could not tell whether this service uses API keys.";
    showProblem($("key-error"), e);
    return;
  }
  mode.dataset.keys = on ? "on" : "off";
  mode.textContent = on ? "API keys are on: every call needs a key with the right scope."
    : "API keys are off on this service: calls need no key, and any key sent is ignored (not checked).";
  status.dataset.result = "";
  if (!getKey()) {
    status.textContent = on ? "No key set: paste yours above." : "No key set (none needed).";
    return;
  }
  if (!on) {
    status.textContent = "A key is set, but the service ignores it: it cannot be checked while keys are off.";
    status.dataset.result = "unchecked";
    return;
  }
  try {
    await api("/v1/classifiers"); // an authenticated call with the key
    status.textContent = "Keys are on and the service accepts this key.";
    status.dataset.result = "accepted";
    if (!serviceReady) await start();
  } catch (e) {
    if (e instanceof Problem && (e.status === 401 || e.status === 403)) {
      status.textContent = e.status === 401 ? "The service did not accept this key." : "The key is valid but lacks the scope.";
      status.dataset.result = "refused";
    }
    showProblem($("key-error"), e);
  }
}

function initKeys() {
  $("key-input").value = getKey();
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    setKey($("key-input").value.trim());
    checkKey();
  });
  $("key-clear").addEventListener("click", () => {
    setKey("");
    $("key-input").value = "";
    checkKey();
  });
  checkKey();
}

// Wait for /readyz, then load the catalog (classifiers, methods, domains) the forms pick from.
async function start() {
  const status = $("service-status");
  for (;;) {
    let body;
    try {
      const resp = await fetch("readyz");
      body = await resp.json();
    } catch {
      body = { status: "unreachable" };
    }
    if (body.ready) break;
    const loading = Object.entries(body.components || {}).filter(([, c]) => c.status !== "ready")
      .map(([n, c]) => `${n} ${c.status}${c.detail ? ` (${c.detail})` : ""}`);
    status.textContent = `Service ${body.status}${loading.length ? ": " + loading.join(", ") : ""}…`;
    status.dataset.state = "loading";
    waitReason(`Waiting for the service (${body.status}${loading.length ? ": " + loading.join(", ") : ""})`);
    await new Promise((r) => setTimeout(r, 2000));
  }
  try {
    await loadCatalog();
    serviceReady = true;
    waitReason(null);
    status.textContent = "Service ready";
    status.dataset.state = "ready";
    followHash(); // a shared explanation URL reruns now that the form can be filled
  } catch (e) {
    status.dataset.state = "error";
    const needKey = e instanceof Problem && e.status === 401;
    status.textContent = needKey ? "The service needs an API key: set one in the Keys tab." : `Could not load the catalog: ${e.message}`;
    waitReason(needKey ? "Needs an API key (Keys tab)" : "The service's catalog did not load");
  }
}

waitReason("Waiting for the service…");
buildParamFields();
initGlossary();
initTabs();
initKeys();
initExplain(recordExplanation);
initEffects();
initDomains();
start();
