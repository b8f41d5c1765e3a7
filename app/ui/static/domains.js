// The Domains page: each domain's schema, status, corpus stats, taggers, methods and calibration tables;
// build a new one from a JSONL file as a job with a progress bar.

import { api, pollJob } from "./api.js";
import { $, fmt, h, objectsTable, scrollBox, showProblem } from "./dom.js";
import { TIPS, tipFor } from "./glossary.js";
import { progressUpdate } from "./effects.js";
import { catalog, loadCatalog } from "./params.js";

export function initDomains() {
  $("domain-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    create().catch((e) => showProblem($("domain-create-error"), e));
  });
}

function schemaTable(schema) {
  const concepts = (schema && schema.concepts) || [];
  return scrollBox(h("table", { class: "grid schema" }, h("caption", {}, "Concepts"),
    h("thead", {}, h("tr", {}, ["concept", "values", "description"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, concepts.map((c) => h("tr", {}, h("th", { scope: "row" }, c.name),
      h("td", {}, (c.values || []).join(", ")), h("td", {}, c.description || ""))))));
}

const num = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : fmt(v)) : v);

// Nested stats (e.g. pairs per concept) as "key: value" text; long ones fold away.
function flat(v) {
  if (Array.isArray(v)) return v.join(", ");
  if (v && typeof v === "object") {
    const text = Object.entries(v).map(([k, x]) => `${k}: ${typeof x === "object" ? flat(x) : num(x)}`).join(" · ");
    const n = Object.keys(v).length;
    return n > 6 ? h("details", {}, h("summary", {}, `${n} entries`), text) : text;
  }
  return num(v);
}

function statsTable(obj, caption) {
  return h("table", { class: "kv" }, h("caption", {}, caption), h("tbody", {}, Object.entries(obj).map(([k, v]) =>
    h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, flat(v))))));
}

function taggersTable(taggers) {
  const rows = Object.entries(taggers).map(([concept, t]) => (t && typeof t === "object"
    ? { concept, ...t, usable: t.usable === undefined ? "" : t.usable ? "yes" : "no" } : { concept, accuracy: t }));
  return scrollBox(objectsTable(rows, "Concept taggers (held-out accuracy beside the majority-value rate)"));
}

function methodsTable(methods) {
  const rows = Object.entries(methods).map(([concept, ms]) => {
    if (Array.isArray(ms)) return { concept, available: ms.join(", "), "not available": "" };
    const ok = Object.entries(ms).filter(([, why]) => !why).map(([m]) => m);
    const no = Object.entries(ms).filter(([, why]) => why).map(([m, why]) => `${m} (${why})`);
    return { concept, available: ok.join(", "), "not available": no.join("; ") };
  });
  return scrollBox(objectsTable(rows, "Methods per concept"));
}

// Each estimator's name (stack:0, combiner:ridge, match@10) with what it is as its tooltip.
function methodTips(table) {
  for (const td of table.querySelectorAll("tbody tr td:first-child")) {
    const name = td.textContent.replace(/ \(default\)$/, "").split("@")[0];
    const tip = tipFor(name) || catalog.methods[name];
    if (tip) {
      td.title = tip;
      td.classList.add("term");
    }
  }
  return table;
}

// One classifier's calibration: the held-out error of every method (macro), the chosen default, the cost.
function calibration(clf, c) {
  const rows = Array.isArray(c.table) ? c.table : Object.entries(c.table).map(([method, errs]) =>
    ({ method: method + (method === c.default_estimator ? " (default)" : ""), ...(errs && typeof errs === "object" ? errs : { error: errs }) }));
  if (c.auto && typeof c.auto === "object") rows.unshift({ method: "auto (per concept and direction)", ...c.auto });
  const facts = {};
  for (const k of ["created_at", "heldout_pairs", "coverage", "default_estimator"]) if (c[k] !== undefined && c[k] !== null) facts[k] = c[k];
  return h("details", { class: "calibration", "data-classifier": clf },
    h("summary", { title: TIPS.calibration }, `Calibration of ${clf}: ${rows.length} estimators on ${c.heldout_pairs ?? "?"} held-out pairs, ` +
      `default ${c.default_estimator ?? "?"}`),
    trainingNote(c.shift),
    scrollBox(methodTips(objectsTable(rows, "Held-out error per estimator (macro; lower is better)", tipFor))),
    Object.keys(facts).length ? statsTable(facts, "Calibration facts") : null);
}

// Which of the domain's texts the classifier was trained on (declared, the corpus's column, or suspected)
// and what the fit did about it: a classifier's errors on its own training texts are not its errors elsewhere.
function trainingNote(shift) {
  if (!shift || typeof shift !== "object") return null;
  const found = shift.trained_on_declared ? "Training texts: declared with the request." :
    shift.trained_on_found ? `Training texts: ${shift.trained_on_found}.` : null;
  const fit = shift.fit_on ? `Fit on ${shift.fit_on}.` : null;
  if (!found && !fit) return null;
  return h("p", { class: `note calibration-shift${shift.trained_on_suspected ? " warn-text" : ""}` },
    [found, fit].filter(Boolean).join(" "));
}

function domainCard(d) {
  const cal = Object.entries(d.calibrations || {}).filter(([, c]) => c && c.table && Object.keys(c.table).length);
  return h("article", { class: "domain", "data-id": d.id },
    h("h3", {}, d.id, d.default ? h("span", { class: "badge" }, "default") : null,
      h("span", { class: `badge domain-status ${d.status || ""}` }, d.status || "unknown")),
    d.source ? h("p", { class: "note" }, d.source) : null,
    d.task ? h("p", { class: "note domain-task" }, `Classifier labels: ${d.task}`) : null,
    schemaTable(d.schema),
    h("div", { class: "side-by-side" },
      d.stats && Object.keys(d.stats).length ? statsTable(d.stats, "Corpus") : null,
      d.space && Object.keys(d.space).length ? statsTable(d.space, "Concept space") : null),
    d.taggers && Object.keys(d.taggers).length ? taggersTable(d.taggers) : null,
    d.methods && Object.keys(d.methods).length ? methodsTable(d.methods) : null,
    cal.length ? h("div", { class: "calibrations" }, cal.map(([clf, c]) => calibration(clf, c))) : null,
    d.status === "ready" ? calibrateForm(d.id) : null);
}

// Calibrate a classifier on this domain's held-out pairs (a job; `auto` then uses the result).
function calibrateForm(id) {
  const sel = h("select", { id: `calibrate-${id}` }, catalog.classifiers.map((c) => h("option", { value: c }, c)));
  return h("form", { class: "inline-form", onsubmit: (ev) => {
    ev.preventDefault();
    calibrate(id, sel.value, ev.submitter).catch((e) => showProblem($("domains-error"), e));
  } }, h("label", { for: `calibrate-${id}` }, "Calibrate a classifier"), sel,
  h("button", { type: "submit", class: "calibrate", "data-domain": id }, "Calibrate"));
}

async function calibrate(id, classifier, button) {
  showProblem($("domains-error"), null);
  button.disabled = true;
  try {
    const job = await api(`/v1/domains/${encodeURIComponent(id)}/calibrations`, { method: "POST", json: { classifier } });
    $("domain-progress").hidden = false;
    const final = await pollJob(job.id, progressUpdate("domain", `Calibrating ${classifier} on ${id}:`), { intervalMs: 700 });
    if (final.status !== "succeeded") {
      showProblem($("domains-error"), { title: `The calibration ${final.status}`, detail: final.error || "" });
    }
  } finally {
    button.disabled = false;
  }
  await refreshDomains();
}

export async function refreshDomains() {
  const box = $("domains-list");
  showProblem($("domains-error"), null);
  try {
    const res = await api("/v1/domains");
    box.replaceChildren(...(res.domains.length ? res.domains.map(domainCard) : [h("p", {}, "No domain yet.")]));
  } catch (e) {
    showProblem($("domains-error"), e);
  }
}

async function create() {
  const err = $("domain-create-error");
  showProblem(err, null);
  const id = $("domain-id").value.trim();
  const file = $("domain-file").files[0];
  if (!id || !file) {
    showProblem(err, { title: "Missing input", detail: !id ? "Give the new domain an id." : "Choose a JSONL corpus file." });
    return;
  }
  const params = { id };
  const raw = $("domain-schema").value.trim();
  if (raw) {
    try {
      params.schema = JSON.parse(raw);
    } catch (e) {
      showProblem(err, { title: "Invalid schema", detail: `The concept schema is not JSON: ${e.message}` });
      return;
    }
  }
  const form = new FormData();
  form.append("file", file);
  form.append("params", JSON.stringify(params));
  const button = $("domain-submit");
  button.disabled = true;
  try {
    const job = await api("/v1/domains", { method: "POST", form });
    $("domain-progress").hidden = false;
    await refreshDomains(); // lists the new domain as "building"
    const final = await pollJob(job.id, progressUpdate("domain", `Building ${id}:`), { intervalMs: 700 });
    if (final.status !== "succeeded") {
      const items = (final.item_errors || []).map((e) => e.error || JSON.stringify(e)).join("; ");
      showProblem(err, { title: `The build ${final.status}`, detail: final.error || items });
    }
  } finally {
    button.disabled = false;
  }
  await refreshDomains();
  await loadCatalog();
}
