// The Effects page: many texts as a job, its live progress, the CaCE with its CI, and the per-text rows.

import { api, pollJob } from "./api.js";
import { drawCharts, effectChart, fitted } from "./charts.js";
import { $, download, h, keyValueTable, scrollBox, showProblem, signed, swapTable } from "./dom.js";
import { TIPS } from "./glossary.js";
import { stageText } from "./jobs.js";
import { labelName, readParams } from "./params.js";

// Fewer changed texts than this and a bootstrap interval is too unreliable to read without a warning.
const SMALL_N = 30;

const PAGE = 25;
const MAX_ROWS = 50000;
let current = null; // {job, texts, rows, labels, sort, filter, page}

function textOf(line) {
  try {
    const v = JSON.parse(line);
    return typeof v === "string" ? v : v && typeof v.text === "string" ? v.text : line;
  } catch {
    return line;
  }
}

export function initEffects() {
  $("effects-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run().catch((e) => showProblem($("effects-error"), e));
  });
  $("effects-cancel").addEventListener("click", async () => {
    if (!current) return;
    try {
      await api(`/v1/jobs/${current.job.id}/cancel`, { method: "POST" });
    } catch (e) {
      showProblem($("effects-error"), e);
    }
  });
}

async function run() {
  const err = $("effects-error");
  showProblem(err, null);
  const params = { ...readParams("effects"), confidence: Number($("effects-confidence").value) || 0.95, mode: "job" };
  const file = $("effects-file").files[0];
  let job, texts;
  const button = $("effects-submit");
  if (button.disabled) return; // the service is not ready: the button says why
  button.disabled = true;
  try {
    if (file) {
      const raw = await file.text();
      texts = raw.split(/\r?\n/).filter((l) => l.trim()).map(textOf);
      const form = new FormData();
      form.append("file", file);
      form.append("params", JSON.stringify(params));
      job = await api("/v1/effects/upload", { method: "POST", form });
    } else {
      texts = $("effects-texts").value.split(/\r?\n/).map((t) => t.trim()).filter(Boolean);
      if (!texts.length) {
        showProblem(err, { title: "No texts", detail: "Paste texts (one per line) or choose a JSONL file." });
        return;
      }
      job = await api("/v1/effects", { method: "POST", json: { texts, ...params } });
    }
  } finally {
    button.disabled = false;
  }
  current = { job, texts, rows: [], labels: [], sort: { key: "index", dir: 1 }, filter: "", status: "", page: 0, domain: params.domain };
  $("effects-result").hidden = true;
  $("effects-progress").hidden = false;
  $("effects-cancel").hidden = false;
  const final = await pollJob(job.id, progressUpdate("effects", "Effects job"));
  $("effects-cancel").hidden = true;
  current.job = final;
  if (final.status === "failed") {
    showProblem(err, { title: "The job failed", detail: final.error || "see the rows for per-text errors" });
  } else if (final.status === "cancelled") {
    showProblem(err, { title: "Cancelled", detail: "The job was cancelled; finished texts are kept below." });
  }
  await loadRows(final);
  renderResult();
}

// A progress callback for a job: the <progress> bar, counts and status.
export function progressUpdate(prefix, what) {
  return (job) => {
    const counts = job.counts || {};
    const done = (counts.done || 0) + (counts.failed || 0);
    $(`${prefix}-bar`).value = job.progress || 0;
    $(`${prefix}-bar-label`).textContent = `${what} ${job.id.slice(0, 8)}`;
    $(`${prefix}-bar-text`).textContent = `${job.status} · ${done}/${job.total} item${job.total === 1 ? "" : "s"}` +
      (counts.failed ? ` · ${counts.failed} failed` : "") + ` · ${Math.round((job.progress || 0) * 100)}%` +
      (stageText(job) ? ` · ${stageText(job)}` : "");
    $(`${prefix}-progress`).dataset.status = job.status;
  };
}

async function loadRows(job) {
  let offset = 0;
  while (offset !== null && offset < MAX_ROWS) {
    const page = await api(`/v1/jobs/${job.id}/rows?offset=${offset}&limit=1000`);
    current.rows.push(...page.rows);
    offset = page.next_offset;
  }
  const first = current.rows.find((r) => r.icace);
  current.labels = first ? Object.keys(first.icace) : (job.result ? job.result.labels : []);
}

function renderResult() {
  const { job } = current;
  const box = $("effects-result");
  const parts = [];
  const res = job.result;
  if (res) {
    const sm = res.summary || {};
    const name = (l) => labelName(res.domain || current.domain, l);
    const small = typeof sm.n_changed === "number" && sm.n_changed < SMALL_N;
    parts.push(h("h3", {}, h("span", { class: "term", title: TIPS.cace }, "CaCE"), " with ",
      h("span", { class: "term", title: TIPS.ci }, `${Math.round(res.confidence * 100)}% confidence interval`)),
      h("p", { class: "summary", id: "effects-summary" },
        `${sm.n_changed} of ${sm.n_texts} texts changed by the intervention`,
        sm.n_unchanged ? `, ${sm.n_unchanged} already at the target` : "", sm.n_failed ? `, ${sm.n_failed} failed` : "",
        sm.most_increased ? ` · most increased: ${name(sm.most_increased)}, most decreased: ${name(sm.most_decreased)}` : ""),
      small ? h("p", { class: "problem small-n", id: "effects-small-n", role: "note" },
        h("strong", {}, `Small sample: the interval rests on ${sm.n_changed} changed text${sm.n_changed === 1 ? "" : "s"}. `),
        `A bootstrap interval from fewer than ${SMALL_N} texts is unreliable (usually too narrow); add texts before ` +
        "reading much into it.") : null,
      h("div", { class: "charts" },
        h("figure", {}, fitted((w) => effectChart(res.labels, res.cace, res.ci_low, res.ci_high, { name: "CaCE", interval: "CI", width: w })),
          h("figcaption", {}, "CaCE per label (bar) with its bootstrap confidence interval (whiskers)")),
        h("div", { class: "side-by-side" },
          h("table", { class: "grid numbers", id: "effects-cace" },
            h("thead", {}, h("tr", {}, [["label", null], ["CaCE", TIPS.cace], ["CI low", TIPS.ci], ["CI high", TIPS.ci]]
              .map(([c, tip]) => h("th", { scope: "col", title: tip, class: tip ? "term" : null }, c)))),
            h("tbody", {}, res.labels.map((l) => h("tr", { "data-label": l }, h("th", { scope: "row" }, name(l)),
              h("td", { class: "num cace" }, signed(res.cace[l])), h("td", { class: "num" }, signed(res.ci_low[l])),
              h("td", { class: "num" }, signed(res.ci_high[l])))))),
          sm.sources ? keyValueTable(sm.sources, "Source values of the texts") : null)));
  }
  parts.push(h("h3", {}, "Per-text ICaCE"),
    h("div", { class: "table-tools" },
      h("label", { for: "rows-filter" }, "Filter"),
      h("input", { id: "rows-filter", type: "search", placeholder: "text, id or source", value: current.filter,
        oninput: (e) => { current.filter = e.target.value; current.page = 0; renderRows(); } }),
      h("label", { for: "rows-status" }, "Status"),
      h("select", { id: "rows-status", onchange: (e) => { current.status = e.target.value; current.page = 0; renderRows(); } },
        ["", "done", "unchanged", "failed", "pending", "running"].map((s) => h("option", { value: s }, s || "any"))),
      h("button", { type: "button", id: "rows-jsonl", onclick: downloadJsonl }, "Download JSONL"),
      h("button", { type: "button", id: "rows-csv", onclick: downloadCsv }, "Download CSV")),
    h("div", { id: "rows-table" }, scrollBox(h("table", { class: "grid rows", id: "effects-rows" }),
      "scroll sideways for every label's ICaCE"), h("div", { class: "pager", id: "rows-pager" })));
  box.replaceChildren(...parts);
  box.hidden = false;
  drawCharts(box);
  renderRows();
}

function visibleRows() {
  const q = current.filter.toLowerCase();
  const { key, dir } = current.sort;
  const val = (r) => (key.startsWith("icace:") ? (r.icace ? r.icace[key.slice(6)] : null) :
    key === "text" ? current.texts[r.index] || "" : r[key]);
  return current.rows
    .filter((r) => !current.status || r.status === current.status)
    .filter((r) => !q || [current.texts[r.index], r.id, r.source, r.status, r.error].some((x) => x && String(x).toLowerCase().includes(q)))
    .sort((a, b) => {
      const x = val(a), y = val(b);
      if (x === y) return a.index - b.index;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * dir;
    });
}

function renderRows() {
  const rows = visibleRows();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  current.page = Math.min(current.page, pages - 1);
  const shown = rows.slice(current.page * PAGE, (current.page + 1) * PAGE);
  const cols = [["index", "#"], ["id", "id"], ["text", "text"], ["status", "status"], ["source", "source"],
    ...current.labels.map((l) => [`icace:${l}`, `ICaCE ${l}`]), ["n_counterfactuals", "K used"]];
  const tips = { n_counterfactuals: TIPS.k, ...Object.fromEntries(current.labels.map((l) => [`icace:${l}`, TIPS.icace])) };
  const head = h("tr", {}, cols.map(([key, name]) => {
    const sorted = current.sort.key === key;
    return h("th", { scope: "col", title: tips[key] || null, "aria-sort": sorted ? (current.sort.dir > 0 ? "ascending" : "descending") : "none" },
      h("button", { type: "button", class: "sort", "data-key": key, onclick: () => {
        current.sort = { key, dir: sorted ? -current.sort.dir : 1 };
        renderRows();
      } }, name, sorted ? (current.sort.dir > 0 ? " ▲" : " ▼") : ""));
  }));
  const body = shown.map((r) => h("tr", { "data-index": r.index, class: r.status },
    h("td", { class: "num" }, r.index), h("td", {}, r.id || ""),
    h("td", { class: "text" }, current.texts[r.index] || ""), h("td", {}, r.status, r.error ? h("small", { class: "err" }, ` ${r.error}`) : null),
    h("td", {}, r.source || ""),
    current.labels.map((l) => h("td", { class: "num", "data-label": l }, r.icace ? signed(r.icace[l]) : "")),
    h("td", { class: "num" }, r.n_counterfactuals ?? "")));
  swapTable($("rows-table").querySelector(".table-wrap"),
    h("table", { class: "grid rows", id: "effects-rows" }, h("thead", {}, head), h("tbody", {}, body)));
  $("rows-pager").replaceChildren(
      h("button", { type: "button", disabled: current.page === 0, onclick: () => { current.page--; renderRows(); } }, "‹ Previous"),
      h("span", { id: "rows-count" }, `${rows.length} row${rows.length === 1 ? "" : "s"} · page ${current.page + 1} of ${pages}`),
      h("button", { type: "button", disabled: current.page >= pages - 1, onclick: () => { current.page++; renderRows(); } }, "Next ›"));
}

async function downloadJsonl() {
  try {
    const resp = await api(`/v1/jobs/${current.job.id}/rows.jsonl`, { raw: true });
    download(`${current.job.id}.jsonl`, await resp.text(), "application/x-ndjson");
  } catch (e) {
    showProblem($("effects-error"), e);
  }
}

// One CSV cell, safe to open in a spreadsheet (OWASP "CSV Injection"): every cell is quoted with
// its quotes doubled, and text that starts with = + - @ tab or CR gets a leading ' so it is never
// run as a formula ("-1+cmd|..." included: looking like a number is not being one). Numbers the
// page computed are written as numbers.
export function csvCell(v) {
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : "";
  const t = v === null || v === undefined ? "" : String(v);
  const safe = /^[=+\-@\t\r]/.test(t) ? "'" + t : t;
  return `"${safe.replace(/"/g, '""')}"`;
}

export function rowsCsv(rows, labels, texts) {
  const header = ["index", "id", "status", "source", "n_counterfactuals",
    ...labels.map((l) => `icace_${l}`), ...labels.map((l) => `base_${l}`), "error", "text"];
  const lines = [header.map(csvCell).join(",")];
  for (const r of rows) {
    lines.push([r.index, r.id, r.status, r.source, r.n_counterfactuals,
      ...labels.map((l) => (r.icace ? r.icace[l] : "")), ...labels.map((l) => (r.base_prediction ? r.base_prediction[l] : "")),
      r.error, texts[r.index]].map(csvCell).join(","));
  }
  return lines.join("\r\n") + "\r\n";
}

function downloadCsv() {
  download(`${current.job.id}.csv`, rowsCsv(current.rows, current.labels, current.texts), "text/csv");
}

