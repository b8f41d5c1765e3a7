// The Jobs page: every background job (effects, domain builds, calibrations, also the ones the
// service queued itself) with its live progress, from GET /v1/jobs.

import { api } from "./api.js";
import { $, h, scrollBox, showProblem, swapTable } from "./dom.js";

const FINAL = ["succeeded", "failed", "cancelled"];
const POLL_MS = 1500;
let timer = null;
let wrap = null;
let generation = 0; // one polling loop at a time: a newer one retires the older

// Poll while the Jobs tab is shown; stop when it is hidden.
export function showJobs(on) {
  clearTimeout(timer);
  timer = null;
  generation += 1;
  if (on) refresh(generation);
}

function when(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "";
}

function took(job) {
  if (!job.started_at) return "";
  const s = (job.finished_at || Date.now() / 1000) - job.started_at;
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

// A job's own page has its exact progress and counts (the list's may lag or be empty): asked for
// every running job on each poll and once for each finished one (a final job never changes).
const finished = new Map(); // id -> the job as GET /v1/jobs/{id} gave it once final

async function detailed(jobs) {
  const ask = [...jobs.filter((j) => !FINAL.includes(j.status)).slice(0, 10),
    ...jobs.filter((j) => FINAL.includes(j.status) && !finished.has(j.id)).slice(0, 20)];
  const fresh = await Promise.all(ask.map((j) => api(`/v1/jobs/${encodeURIComponent(j.id)}`).catch(() => null)));
  const byId = {};
  for (const j of fresh) {
    if (!j) continue;
    byId[j.id] = j;
    if (FINAL.includes(j.status)) finished.set(j.id, j);
  }
  return jobs.map((j) => byId[j.id] || finished.get(j.id) || j);
}

function duration(s) {
  s = Math.round(s);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

// The running stage of a one-item job (a domain build, an LLM build, a calibration), as the job's
// `stages` snapshot has it: "pairs 40% (stage 3/8) · ETA 2 min 5 s". Empty when it has none.
export function stageText(job) {
  const st = job.stages;
  if (!st || !st.stage || FINAL.includes(job.status)) return "";
  const pct = st.stage_percent == null ? "" : ` ${Math.round(st.stage_percent)}%`;
  const eta = st.eta_s == null ? "" : ` · ETA ${duration(st.eta_s)}`;
  return `${st.stage}${pct} (stage ${st.stage_index}/${st.stage_count})${st.note ? ` ${st.note}` : ""}${eta}`;
}

function row(job) {
  const c = job.counts || {};
  const done = (c.done || 0) + (c.failed || 0);
  const pct = Math.round((job.progress || 0) * 100);
  const stage = stageText(job) || job.detail || (job.error ? job.error : "");
  return h("tr", { "data-id": job.id, "data-status": job.status, "data-kind": job.kind },
    h("td", {}, job.kind), h("td", {}, h("code", { title: job.id }, job.id.slice(0, 8))),
    h("td", { class: "status" }, job.status),
    h("td", { class: "progress" }, h("progress", { max: 1, value: job.progress || 0, "aria-label": `${job.kind} ${job.id.slice(0, 8)} progress` }),
      ` ${pct}%`),
    h("td", { class: "num counts" }, `${done}/${job.total}` + (c.failed ? ` (${c.failed} failed)` : "")),
    h("td", { class: "stage" }, stage),
    h("td", {}, when(job.created_at)), h("td", { class: "num" }, took(job)));
}

async function refresh(g) {
  if ($("page-jobs").hidden || g !== generation) return;
  try {
    const list = await api("/v1/jobs?limit=100");
    const jobs = await detailed(list.jobs);
    if (g !== generation) return;
    showProblem($("jobs-error"), null);
    const running = jobs.filter((j) => !FINAL.includes(j.status)).length;
    $("jobs-summary").textContent = `${list.total} job${list.total === 1 ? "" : "s"}` +
      (running ? `, ${running} queued or running` : ", none running") + (list.total > jobs.length ? ` (newest ${jobs.length} shown)` : "");
    const table = h("table", { class: "grid jobs", id: "jobs-table" },
      h("thead", {}, h("tr", {}, ["kind", "id", "status", "progress", "items", "stage", "created", "took"]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, jobs.map(row)));
    if (!wrap) {
      wrap = scrollBox(table);
      $("jobs-list").replaceChildren(wrap);
    } else {
      swapTable(wrap, table);
    }
  } catch (e) {
    showProblem($("jobs-error"), e);
  }
  if (!$("page-jobs").hidden && g === generation) timer = setTimeout(() => refresh(g), POLL_MS);
}
