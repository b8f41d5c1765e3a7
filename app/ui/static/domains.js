// The Domains page: each domain's schema, status, taggers, methods and calibration tables; create one from a file.
// A server without the Domains API shows its concept spaces instead (and creates a space).

import { api, optional, pollJob } from "./api.js";
import { $, fmt, h, keyValueTable, objectsTable, showProblem } from "./dom.js";
import { progressUpdate } from "./effects.js";
import { loadCatalog } from "./params.js";

let domainsApi = true;

export function initDomains() {
  $("domain-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    create().catch((e) => showProblem($("domain-create-error"), e));
  });
}

function schemaTable(schema) {
  const concepts = (schema && schema.concepts) || [];
  return h("table", { class: "grid schema" }, h("caption", {}, "Concepts"),
    h("thead", {}, h("tr", {}, ["concept", "values", "description"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, concepts.map((c) => h("tr", {}, h("th", { scope: "row" }, c.name),
      h("td", {}, (c.values || []).join(", ")), h("td", {}, c.description || "")))));
}

function domainCard(d) {
  const cal = Object.entries(d.calibrations || {});
  return h("article", { class: "domain", "data-id": d.id },
    h("h3", {}, d.id, d.default ? h("span", { class: "badge" }, "default") : null,
      h("span", { class: `badge status ${d.status || ""}` }, d.status || "unknown")),
    schemaTable(d.schema),
    h("div", { class: "side-by-side" },
      d.stats && Object.keys(d.stats).length ? keyValueTable(d.stats, "Corpus") : null,
      d.taggers && Object.keys(d.taggers).length ? keyValueTable(
        Object.fromEntries(Object.entries(d.taggers).map(([c, a]) => [c, typeof a === "number" ? fmt(a) : a])),
        "Tagger accuracy") : null,
      d.methods && Object.keys(d.methods).length ? keyValueTable(
        Object.fromEntries(Object.entries(d.methods).map(([c, ms]) => [c, (ms || []).join(", ")])), "Methods per concept") : null),
    cal.length ? h("div", { class: "calibrations" }, cal.map(([clf, c]) =>
      (c && c.table && c.table.length ? objectsTable(c.table, `Calibration for ${clf}`) : null))) : null);
}

function spaceCard(sp) {
  const m = sp.meta || {};
  const stats = {};
  for (const k of ["trainer", "train_split", "pool_size", "n_pairs", "build_seconds"]) if (m[k] !== undefined) stats[k] = m[k];
  if (m.diagnostics && m.diagnostics.hit_rate !== undefined) stats.hit_rate = JSON.stringify(m.diagnostics.hit_rate);
  return h("article", { class: "domain", "data-id": sp.id },
    h("h3", {}, sp.id, sp.default ? h("span", { class: "badge" }, "default") : null, h("span", { class: "badge status ready" }, "space")),
    m.concept_schema ? schemaTable(m.concept_schema) : null,
    Object.keys(stats).length ? keyValueTable(stats, "Space") : null);
}

export async function refreshDomains() {
  const box = $("domains-list");
  showProblem($("domains-error"), null);
  try {
    const res = await optional("/v1/domains");
    domainsApi = res !== null;
    if (domainsApi) {
      box.replaceChildren(...(res.domains.length ? res.domains.map(domainCard) : [h("p", {}, "No domain yet.")]));
    } else {
      const spaces = (await api("/v1/spaces")).spaces;
      box.replaceChildren(h("p", { class: "note" }, "This server has no Domains API; its concept spaces are listed instead."),
        ...(spaces.length ? spaces.map(spaceCard) : [h("p", {}, "No space yet (the default one may still be loading).")]));
    }
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
  let schema = null;
  const raw = $("domain-schema").value.trim();
  if (raw) {
    try {
      schema = JSON.parse(raw);
    } catch (e) {
      showProblem(err, { title: "Invalid schema", detail: `The concept schema is not JSON: ${e.message}` });
      return;
    }
  }
  const form = new FormData();
  form.append("file", file);
  if (domainsApi) {
    form.append("params", JSON.stringify(schema ? { id, schema } : { id }));
  } else {
    form.append("id", id);
    if (schema) form.append("concept_schema", JSON.stringify(schema));
  }
  const button = $("domain-submit");
  button.disabled = true;
  try {
    const job = await api(domainsApi ? "/v1/domains" : "/v1/spaces", { method: "POST", form });
    $("domain-progress").hidden = false;
    const final = await pollJob(job.id, progressUpdate("domain", domainsApi ? "Domain job" : "Space job"), { intervalMs: 700 });
    if (final.status !== "succeeded") {
      showProblem(err, { title: `The job ${final.status}`, detail: final.error || (final.item_errors || []).map((e) => e.error || JSON.stringify(e)).join("; ") });
    }
  } finally {
    button.disabled = false;
  }
  await refreshDomains();
  await loadCatalog();
}
