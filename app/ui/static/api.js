// Calls to the service's API: the session's key on every request, problem+json turned into errors.

const KEY = "cace.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

// An RFC 7807 problem (or anything else that went wrong) as one error the pages can show.
export class Problem extends Error {
  constructor(status, body) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.title = body.title || (status ? `HTTP ${status}` : "Request failed");
    this.detail = body.detail || "";
    this.errors = Array.isArray(body.errors) ? body.errors : [];
    this.type = body.type || "";
  }
}

// Relative to the page (/ui), so the UI also works behind a path prefix.
function url(path) {
  return path.replace(/^\//, "");
}

export async function api(path, { method = "GET", json, form, raw = false } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let resp;
  try {
    resp = await fetch(url(path), { method, headers, body });
  } catch (e) {
    throw new Problem(0, { title: "Service unreachable", detail: String(e.message || e) });
  }
  if (!resp.ok) {
    let problem;
    try {
      problem = await resp.json();
    } catch {
      problem = { title: `HTTP ${resp.status}`, detail: resp.statusText };
    }
    throw new Problem(resp.status, problem);
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  return resp.json();
}

// Poll a job until it is final, calling onUpdate with every state.
export async function pollJob(id, onUpdate, { intervalMs = 400, signal } = {}) {
  for (;;) {
    const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
    onUpdate(job);
    if (["succeeded", "failed", "cancelled"].includes(job.status)) return job;
    if (signal && signal.aborted) return job;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
