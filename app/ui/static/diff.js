// Word-level diff (longest common subsequence over words), rendered as <del>/<ins> runs.

import { h } from "./dom.js";

const MAX_CELLS = 4_000_000; // ~2000 x 2000 words; beyond that, show a plain replacement

function words(text) {
  return text.match(/\s+|[^\s]+/g) || [];
}

// [[op, text]] with op "=", "-" (only in a) or "+" (only in b); whitespace rides with its neighbours.
export function diffWords(a, b) {
  const A = words(a), B = words(b);
  const aw = A.filter((t) => /\S/.test(t)), bw = B.filter((t) => /\S/.test(t));
  if (aw.length * bw.length > MAX_CELLS) return [["-", a], ["+", b]];
  const n = aw.length, m = bw.length;
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      L[i][j] = aw[i] === bw[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    }
  }
  const out = [];
  const push = (op, t) => {
    const last = out[out.length - 1];
    if (last && last[0] === op) last[1] += " " + t;
    else out.push([op, t]);
  };
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && aw[i] === bw[j]) { push("=", aw[i]); i++; j++; }
    else if (j < m && (i === n || L[i][j + 1] >= L[i + 1][j])) { push("+", bw[j]); j++; }
    else { push("-", aw[i]); i++; }
  }
  return out;
}

export function renderDiff(a, b) {
  const parts = diffWords(a, b);
  const el = h("p", { class: "diff" });
  parts.forEach(([op, text], k) => {
    if (k > 0) el.append(" ");
    if (op === "=") el.append(text);
    else if (op === "-") el.append(h("del", { title: "only in the base text" }, text));
    else el.append(h("ins", { title: "only in the counterfactual" }, text));
  });
  return el;
}
