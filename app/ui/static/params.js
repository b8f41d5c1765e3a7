// The intervention parameters shared by the Explain and Effects forms, and the catalog they pick from
// (domains and their concept schemas, classifiers, methods).

import { api } from "./api.js";
import { $, h } from "./dom.js";
import { TIPS } from "./glossary.js";

export const catalog = { domains: [], classifiers: [], llms: [], methods: {}, unavailable: {} };

// Domains (with their concept schemas), classifiers and methods; every form is refilled from them.
export async function loadCatalog() {
  const [domains, classifiers, llms, methods] = await Promise.all([
    api("/v1/domains"), api("/v1/classifiers"), api("/v1/llms"), api("/v1/methods")]);
  catalog.domains = domains.domains;
  catalog.classifiers = classifiers.items.map((c) => c.name);
  catalog.llms = llms.items.map((c) => c.name);
  catalog.methods = methods.methods;
  catalog.unavailable = methods.unavailable || {};
  for (const prefix of Object.keys(built)) fill(prefix);
}

const built = {};

function field(id, label, control, hint, tip) {
  return h("div", { class: "field", id: `${id}-field` }, h("label", { for: id, title: tip || null, class: tip ? "term" : null }, label), control,
    hint !== undefined ? h("small", { id: `${id}-hint`, class: "field-hint" }, hint) : null);
}

// Build the fields into every .param-fields[data-prefix] placeholder.
export function buildParamFields() {
  for (const box of document.querySelectorAll(".param-fields")) {
    const p = box.dataset.prefix;
    built[p] = true;
    box.append(
      field(`${p}-domain`, "Domain", h("select", { id: `${p}-domain` })),
      field(`${p}-classifier`, "Classifier", h("select", { id: `${p}-classifier` })),
      field(`${p}-concept`, "Concept", h("input", { id: `${p}-concept`, list: `${p}-concepts`, autocomplete: "off",
        required: true, "aria-describedby": `${p}-concept-hint` }), ""),
      h("datalist", { id: `${p}-concepts` }),
      field(`${p}-target`, "Target value", h("input", { id: `${p}-target`, list: `${p}-values`, autocomplete: "off",
        required: true })),
      field(`${p}-source`, "Source value (optional)", h("input", { id: `${p}-source`, list: `${p}-values`,
        autocomplete: "off", placeholder: "inferred by the taggers", "aria-describedby": `${p}-source-hint` }),
      "leave empty to infer it"),
      h("datalist", { id: `${p}-values` }),
      field(`${p}-method`, "Method", h("select", { id: `${p}-method`, "aria-describedby": `${p}-method-hint` }), ""),
      field(`${p}-llm`, "LLM (for generate)", h("select", { id: `${p}-llm` })),
      field(`${p}-k`, "K (counterfactuals)", h("input", { id: `${p}-k`, type: "number", min: 1, step: 1, value: 5 }),
        undefined, TIPS.k),
    );
    $(`${p}-llm-field`).hidden = true; // only for generate
    $(`${p}-domain`).addEventListener("change", () => fillConcepts(p));
    $(`${p}-concept`).addEventListener("input", () => fillValues(p));
    $(`${p}-method`).addEventListener("change", () => describeMethod(p));
  }
}

function options(select, values, selected) {
  select.replaceChildren(...values.map(([v, text]) => h("option", { value: v, selected: v === selected }, text)));
}

function fill(p) {
  const domainSel = $(`${p}-domain`);
  const keep = domainSel.value;
  options(domainSel, catalog.domains.map((d) => [d.id, d.id + (d.default ? " (default)" : "") +
    (d.status && d.status !== "ready" ? ` [${d.status}]` : "")]),
  keep || (catalog.domains.find((d) => d.default) || {}).id);
  const clf = $(`${p}-classifier`);
  options(clf, catalog.classifiers.map((c) => [c, c]), clf.value || catalog.classifiers[0]);
  const llm = $(`${p}-llm`);
  options(llm, [["", "server default"], ...catalog.llms.map((n) => [n, n])], llm.value);
  const method = $(`${p}-method`);
  options(method, [["", "server default (auto once calibrated, else match)"],
    ...Object.keys(catalog.methods).sort().map((m) => [m, m + (catalog.unavailable[m] ? " (unavailable)" : "")])],
  method.value);
  // A method the server cannot run as configured (generate without an LLM) is shown, but not offered.
  for (const o of method.options) {
    if (catalog.unavailable[o.value]) {
      o.disabled = true;
      o.title = catalog.unavailable[o.value];
    }
  }
  if (catalog.unavailable[method.value]) method.value = "";
  describeMethod(p);
  fillConcepts(p);
}

export function currentDomain(p) {
  return catalog.domains.find((d) => d.id === $(`${p}-domain`).value);
}

function concepts(p) {
  const d = currentDomain(p);
  return (d && d.schema && d.schema.concepts) || [];
}

function fillConcepts(p) {
  const list = concepts(p);
  $(`${p}-concepts`).replaceChildren(...list.map((c) => h("option", { value: c.name }, c.description || null)));
  const input = $(`${p}-concept`);
  if (!input.value && list.length) input.value = list[0].name;
  $(`${p}-concept-hint`).textContent = list.length ? "one of " + list.map((c) => c.name).join(", ") : "";
  fillValues(p);
}

function fillValues(p) {
  const c = concepts(p).find((x) => x.name === $(`${p}-concept`).value);
  const values = c ? c.values : [];
  $(`${p}-values`).replaceChildren(...values.map((v) => h("option", { value: v })));
  const target = $(`${p}-target`);
  if (c && !values.includes(target.value)) target.value = values[0] || "";
}

function describeMethod(p) {
  const m = $(`${p}-method`).value;
  const off = Object.keys(catalog.unavailable).map((x) => `${x}: ${catalog.unavailable[x]}`).join("; ");
  $(`${p}-method-hint`).textContent = (m ? catalog.methods[m] || "" : "the domain picks per classifier") +
    (off ? ` · not available here: ${off}` : "");
  $(`${p}-llm-field`).hidden = m !== "generate";
}

// Set the form's fields from a request (a shared URL); options not offered yet are kept for fill().
export function writeParams(p, q) {
  const set = (id, v) => {
    if (v === undefined || v === null) return;
    const el = $(`${p}-${id}`);
    if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === v)) el.append(h("option", { value: v }, v));
    el.value = v;
  };
  set("domain", q.domain);
  fillConcepts(p);
  set("classifier", q.classifier);
  set("concept", q.concept);
  fillValues(p);
  set("target", q.target);
  set("source", q.source ?? "");
  set("method", q.method ?? "");
  set("llm", q.llm ?? "");
  set("k", q.k);
  describeMethod(p);
}

export function domainTask(domainId) {
  const d = catalog.domains.find((x) => x.id === domainId);
  return (d && d.task) || null;
}

// A label as the domain names it (e.g. "4" -> "4 stars" where the domain says its labels are star ratings).
export function labelName(domainId, label) {
  const d = catalog.domains.find((x) => x.id === domainId);
  const names = d && d.label_names;
  return names && names[label] ? `${label} (${names[label]})` : String(label);
}

// The request fields the Explain and Effects forms share.
export function readParams(p) {
  const intervention = { concept: $(`${p}-concept`).value.trim(), target: $(`${p}-target`).value.trim() };
  const source = $(`${p}-source`).value.trim();
  if (source) intervention.source = source;
  const out = { intervention, classifier: $(`${p}-classifier`).value, top_k: Number($(`${p}-k`).value) || 5 };
  if ($(`${p}-method`).value) out.method = $(`${p}-method`).value;
  if ($(`${p}-domain`).value) out.domain = $(`${p}-domain`).value;
  if ($(`${p}-llm`).value) out.llm = $(`${p}-llm`).value;
  return out;
}
