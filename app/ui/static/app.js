// Entry point: tabs, service readiness, the API key, and each page's set-up.

import { api, getKey, Problem, setKey } from "./api.js";
import { $, showProblem } from "./dom.js";
import { initDomains, refreshDomains } from "./domains.js";
import { initEffects } from "./effects.js";
import { initExplain } from "./explain.js";
import { buildParamFields, loadCatalog } from "./params.js";

const TABS = ["explain", "effects", "domains", "keys"];

function select(name, focus = false) {
  for (const t of TABS) {
    const on = t === name;
    const tab = $(`tab-${t}`);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`page-${t}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (name === "domains") refreshDomains();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

function initTabs() {
  TABS.forEach((t, i) => {
    const tab = $(`tab-${t}`);
    tab.addEventListener("click", () => select(t));
    // Arrow keys move between tabs (the WAI-ARIA tabs pattern); Tab moves into the page.
    tab.addEventListener("keydown", (ev) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
      if (step) select(TABS[(i + step + TABS.length) % TABS.length], true);
      else if (ev.key === "Home") select(TABS[0], true);
      else if (ev.key === "End") select(TABS[TABS.length - 1], true);
    });
  });
  const initial = location.hash.slice(1);
  select(TABS.includes(initial) ? initial : "explain");
}

function keyStatus() {
  $("key-status").textContent = getKey() ? "A key is set for this browser session." : "No key set.";
}

function initKeys() {
  $("key-input").value = getKey();
  keyStatus();
  $("key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    setKey($("key-input").value.trim());
    keyStatus();
    showProblem($("key-error"), null);
    try {
      await api("/v1/classifiers");
      $("key-status").textContent = getKey() ? "Key saved; the service accepts it." : "No key set; the service answers without one.";
      await start();
    } catch (e) {
      if (e instanceof Problem && (e.status === 401 || e.status === 403)) {
        $("key-status").textContent = "The service did not accept this key.";
      }
      showProblem($("key-error"), e);
    }
  });
  $("key-clear").addEventListener("click", () => {
    setKey("");
    $("key-input").value = "";
    keyStatus();
  });
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
    const loading = Object.entries(body.components || {}).filter(([, c]) => c.status !== "ready").map(([n, c]) => `${n} ${c.status}`);
    status.textContent = `Service ${body.status}${loading.length ? ": " + loading.join(", ") : ""}…`;
    status.dataset.state = "loading";
    await new Promise((r) => setTimeout(r, 2000));
  }
  try {
    await loadCatalog();
    status.textContent = "Service ready";
    status.dataset.state = "ready";
  } catch (e) {
    status.dataset.state = "error";
    status.textContent = e instanceof Problem && e.status === 401
      ? "The service needs an API key: set one in the Keys tab." : `Could not load the catalog: ${e.message}`;
  }
}

buildParamFields();
initTabs();
initKeys();
initExplain();
initEffects();
initDomains();
start();
