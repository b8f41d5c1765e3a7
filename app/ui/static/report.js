// The Report and Compare pages: a model report (heatmap -> a cell -> its texts -> one text's full
// explanation) and a comparison of two classifiers. Self-contained: the pages are sections this
// module adds to <main>, shown when the URL hash is #report or #compare, so every state has a
// shareable URL: #report/<id>/<cell>/<text index>, #compare/<id>/<cell>.

import { api, Problem } from "./api.js";
import { h, s, showProblem, signed } from "./dom.js";

const PAGES = ["report", "compare"];
const PATH = { report: "/v1/reports", compare: "/v1/comparisons" };

function state() {
  const [page, id, cell, text] = location.hash.slice(1).split("/").map(decodeURIComponent);
  return { page, id, cell, text };
}

function go(page, id, cell, text) {
  const parts = [page, id, cell, text].filter((x) => x !== undefined && x !== null && x !== "");
  location.hash = parts.map(encodeURIComponent).join("/");
}

function color(v, scale) {
  const t = Math.max(-1, Math.min(1, scale > 0 ? v / scale : 0));
  const c = (x) => Math.round(255 - 180 * Math.abs(x));
  return t >= 0 ? `rgb(255,${c(t)},${c(t)})` : `rgb(${c(t)},${c(t)},255)`;
}

// Cells x labels, colored by CaCE (report) or CaCE difference (comparison); a row is a link to its cell.
function heatmap(result, page, id, selected) {
  const labels = result.labels;
  const value = (c, lab) => (result.kind === "comparison" ? c.diff[lab] : c.cace[lab]);
  const cells = [...result.cells].sort((a, b) => a.key.localeCompare(b.key));
  const scale = Math.max(1e-9, ...cells.flatMap((c) => labels.map((l) => Math.abs(value(c, l)))));
  const left = 220, top = 26, cw = 66, ch = 22;
  const svg = s("svg", {
    class: "rp-heatmap", width: left + cw * labels.length + 8, height: top + ch * cells.length + 6,
    role: "img", "aria-label": "heatmap of effects per cell and label",
  });
  labels.forEach((l, j) => svg.append(s("text", { x: left + cw * j + cw / 2, y: top - 8, "text-anchor": "middle" }, l)));
  cells.forEach((c, i) => {
    const y = top + ch * i;
    const row = s("a", { href: `#${page}/${encodeURIComponent(id)}/${encodeURIComponent(c.key)}`, "aria-label": `cell ${c.key}` });
    const flagged = result.kind === "comparison" ? c.flagged : c.placebo && c.placebo.above_noise;
    row.append(s("text", { x: left - 6, y: y + ch * 0.7, "text-anchor": "end", class: flagged ? "rp-mark" : "" }, (c.key === selected ? "▶ " : "") + c.key));
    labels.forEach((l, j) => {
      const v = value(c, l);
      row.append(s("rect", { x: left + cw * j, y, width: cw - 1, height: ch - 1, fill: color(v, scale) }, s("title", {}, `${c.key} ${l}: ${v}`)));
      row.append(s("text", { x: left + cw * j + cw / 2, y: y + ch * 0.7, "text-anchor": "middle" }, signed(v)));
    });
    svg.append(row);
  });
  return svg;
}

async function download(page, id, fmt, box) {
  try {
    const resp = await api(`${PATH[page]}/${encodeURIComponent(id)}/download?format=${fmt}`, { raw: true });
    const blob = await resp.blob();
    const a = h("a", { href: URL.createObjectURL(blob), download: `${page}-${id}.${fmt}` });
    document.body.append(a);
    a.click();
    a.remove();
  } catch (e) {
    showProblem(box, e);
  }
}

function cellView(result, page, id, cell, textIndex, ctx) {
  const labels = result.labels;
  const rows = labels.map((l) => {
    const main = result.kind === "comparison"
      ? [h("td", {}, signed(cell.cace[result.classifiers[0]][l])), h("td", {}, signed(cell.cace[result.classifiers[1]][l])), h("td", {}, signed(cell.diff[l]))]
      : [h("td", {}, signed(cell.cace[l]))];
    return h("tr", {}, h("th", { scope: "row" }, l), main, h("td", {}, `[${signed(cell.ci_low[l])}, ${signed(cell.ci_high[l])}]`));
  });
  const head = result.kind === "comparison"
    ? [h("th", {}, result.classifiers[0]), h("th", {}, result.classifiers[1]), h("th", {}, "difference")]
    : [h("th", {}, "CaCE")];
  const facts = result.kind === "comparison"
    ? `shift ${cell.shift.toFixed(3)} on ${cell.shift_label}; ${cell.flagged ? "FLAGGED" : "within"} threshold ${cell.threshold}`
    : `effect ${cell.effect.toFixed(3)} on ${cell.effect_label}; placebo p (Holm) ${cell.placebo ? cell.placebo.p_holm.toPrecision(3) : "–"}` +
      (cell.placebo && cell.placebo.above_noise ? " — above noise" : " — not above noise") +
      (cell.calibration && cell.calibration.expected_error ? `; calibrated expected ICaCE error (L2) ${Number(cell.calibration.expected_error.l2).toFixed(3)}` : "");
  const texts = (cell.top_texts || []).map((t, k) => h("li", {},
    h("a", { href: `#${page}/${encodeURIComponent(id)}/${encodeURIComponent(cell.key)}/${k}` }, t.text || `text ${t.index}`),
    h("ul", {}, (t.counterfactuals || []).map((cf) => h("li", { class: "rp-cf" }, "→ ", cf.text)))));
  const out = h("div", { class: "rp-cell" },
    h("h3", {}, cell.key),
    h("p", {}, `${cell.n_changed} of ${cell.n_texts} texts changed; ${facts}`),
    h("table", {}, h("tr", {}, h("th", {}, "label"), head, h("th", {}, "CI")), rows),
    h("h4", {}, "Texts it moved most"), h("ol", {}, texts));
  if (textIndex !== undefined && cell.top_texts && cell.top_texts[Number(textIndex)]) {
    const box = h("div", { class: "rp-explanation", "aria-live": "polite" }, "Explaining…");
    out.append(box);
    explainText(result, cell, cell.top_texts[Number(textIndex)], box, ctx);
  }
  return out;
}

// One text's full explanation for the cell's intervention, with the report's method and classifier.
async function explainText(result, cell, t, box, ctx) {
  const classifier = result.kind === "comparison" ? result.classifiers[0] : result.classifier;
  try {
    const e = await api("/v1/explanations", { method: "POST", json: {
      text: t.text, domain: result.domain, classifier, method: result.method, top_k: result.top_k,
      intervention: { concept: cell.concept, target: cell.target, source: cell.source },
    } });
    box.replaceChildren(
      h("h4", {}, `Explanation (${e.method}, ${e.classifier})`),
      h("p", {}, t.text),
      h("table", {}, h("tr", {}, h("th", {}, "label"), h("th", {}, "base"), h("th", {}, "ICaCE")),
        e.labels.map((l) => h("tr", {}, h("th", { scope: "row" }, l), h("td", {}, e.base_prediction[l].toFixed(3)), h("td", {}, signed(e.icace[l]))))),
      h("h4", {}, "Counterfactuals"),
      h("ul", {}, e.counterfactuals.map((cf) => h("li", { class: "rp-cf" }, cf.text))));
  } catch (err) {
    showProblem(ctx.error, err);
    box.remove();
  }
}

async function render(page, section) {
  const { id, cell, text } = state();
  const view = section.querySelector(".rp-view");
  const error = section.querySelector(".problem");
  showProblem(error, null);
  await refreshList(page, section);
  if (!id) {
    view.replaceChildren();
    return;
  }
  let job;
  try {
    job = await api(`${PATH[page]}/${encodeURIComponent(id)}`);
  } catch (e) {
    showProblem(error, e);
    return;
  }
  if (!["succeeded", "failed", "cancelled"].includes(job.status)) {
    const done = (job.counts.done || 0) + (job.counts.failed || 0);
    view.replaceChildren(h("p", {}, `${page} ${job.status}: `, h("progress", { max: job.total || 1, value: done }), ` ${done} / ${job.total} texts`));
    setTimeout(() => { if (state().id === id) render(page, section); }, 1000);
    return;
  }
  if (job.status !== "succeeded") {
    showProblem(error, new Problem(0, { title: `${page} ${job.status}`, detail: job.error || "" }));
    view.replaceChildren();
    return;
  }
  const result = job.result;
  const selected = result.cells.find((c) => c.key === cell);
  const formats = ["json", "csv", "md", "html"].map((f) => h("button", { type: "button", onclick: () => download(page, id, f, error) }, f.toUpperCase()));
  const summary = result.kind === "comparison"
    ? `${result.classifiers[1]} vs ${result.classifiers[0]}: ${result.n_flagged} of ${result.cells.length} cells beyond the threshold`
    : `${result.classifier} on ${result.domain}: ${result.cells.filter((c) => c.placebo && c.placebo.above_noise).length} of ${result.cells.length} cells above noise`;
  view.replaceChildren(
    h("p", {}, summary, " · download: ", formats),
    heatmap(result, page, id, cell),
    selected ? cellView(result, page, id, selected, text, { error }) : h("p", { class: "hint" }, "Pick a cell in the heatmap."),
    result.skipped.length ? h("details", {}, h("summary", {}, `${result.skipped.length} cells skipped`), h("ul", {}, result.skipped.map((x) => h("li", {}, `${x.key}: ${x.reason}`)))) : null);
}

async function refreshList(page, section) {
  const list = section.querySelector(".rp-list");
  try {
    const body = await api(`${PATH[page]}?limit=20`);
    list.replaceChildren(...body.jobs.map((j) => h("li", {}, h("a", { href: `#${page}/${encodeURIComponent(j.id)}` }, `${j.id.slice(0, 8)} — ${j.status}`), ` (${j.total} texts)`)));
  } catch {
    list.replaceChildren();
  }
}

function field(label, input) {
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input);
}

function buildPage(page) {
  const p = `${page}-`;
  const form = h("form", { class: "params", novalidate: true },
    page === "report"
      ? field("Classifier", h("input", { id: `${p}classifier`, placeholder: "default" }))
      : [field("Baseline classifier", h("input", { id: `${p}baseline`, required: true })),
         field("Candidate classifier", h("input", { id: `${p}candidate`, required: true })),
         field("Threshold", h("input", { id: `${p}threshold`, type: "number", step: "0.01", value: "0.05" }))],
    field("Domain", h("input", { id: `${p}domain`, placeholder: "default" })),
    field("Sample size", h("input", { id: `${p}size`, type: "number", min: "1", value: "200" })),
    field("Sample seed", h("input", { id: `${p}seed`, type: "number", min: "0", value: "0" })),
    field("Method", h("input", { id: `${p}method`, value: "match" })),
    h("div", { class: "actions" }, h("button", { type: "submit" }, page === "report" ? "Create report" : "Compare")));
  const section = h("section", { id: `page-${page}`, class: "rp-page", "aria-label": page === "report" ? "Reports" : "Comparisons", hidden: true },
    h("h2", {}, page === "report" ? "Model report" : "Compare two classifiers"),
    form, h("div", { class: "problem", role: "alert", hidden: true }),
    h("h3", {}, "Recent"), h("ul", { class: "rp-list" }), h("div", { class: "rp-view" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = (k) => section.querySelector(`#${p}${k}`).value.trim();
    const body = {
      domain: v("domain") || null, method: v("method") || "match",
      sample: { size: Number(v("size")), seed: Number(v("seed")) },
    };
    if (page === "report") body.classifier = v("classifier") || null;
    else Object.assign(body, { classifiers: [v("baseline"), v("candidate")], threshold: Number(v("threshold")) });
    try {
      const job = await api(PATH[page], { method: "POST", json: body });
      go(page, job.id);
    } catch (e) {
      showProblem(section.querySelector(".problem"), e);
    }
  });
  return section;
}

function show() {
  const { page } = state();
  const ours = PAGES.includes(page);
  for (const sec of document.querySelectorAll("main > section")) {
    if (sec.classList.contains("rp-page")) sec.hidden = sec.id !== `page-${page}`;
    else if (ours) sec.hidden = true;
  }
  if (ours) render(page, document.getElementById(`page-${page}`));
}

function init() {
  const main = document.querySelector("main");
  for (const page of PAGES) main.append(buildPage(page));
  window.addEventListener("hashchange", show);
  // The other pages' tabs hide these pages.
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => document.querySelectorAll(".rp-page").forEach((x) => { x.hidden = true; }));
  }
  // This module runs before app.js, which resets an unknown hash to its first tab: a shared
  // #report/... URL is put back once every module has run (the load event).
  const initial = location.hash;
  window.addEventListener("load", () => {
    if (PAGES.includes(initial.slice(1).split("/")[0])) {
      if (location.hash !== initial) history.replaceState(null, "", initial);
      show();
    }
  });
}

init();
