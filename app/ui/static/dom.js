// Tiny DOM helpers: build elements (HTML or SVG) without innerHTML, so no text is ever parsed as markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function $(id) {
  return document.getElementById(id);
}

export function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return Number(x).toFixed(digits);
}

export function signed(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  const v = Number(x);
  const t = Math.abs(v).toFixed(digits);
  return (v < 0 && Number(t) !== 0 ? "−" : v > 0 && Number(t) !== 0 ? "+" : "±") + t;
}

// Show a problem (or any error) as readable text in a role=alert box; pass null to hide it.
export function showProblem(box, err) {
  box.replaceChildren();
  if (!err) {
    box.hidden = true;
    return;
  }
  const status = err.status ? ` (${err.status})` : "";
  box.append(h("strong", { class: "problem-title" }, `${err.title || "Error"}${status}`));
  if (err.detail) box.append(h("p", { class: "problem-detail" }, err.detail));
  if (err.errors && err.errors.length > 1) {
    box.append(h("ul", {}, err.errors.map((e) => h("li", {}, h("code", {}, e.field), ": ", e.message))));
  }
  if (!err.title && !err.detail) box.append(h("p", {}, String(err.message || err)));
  box.hidden = false;
}

// A table in a box that scrolls sideways when the table is wider than the page, with a hint
// shown only while it does (the page itself never scrolls sideways).
const boxes = new WeakMap(); // table -> its scroll box
const overflowWatch = new ResizeObserver((entries) => {
  for (const e of entries) {
    const box = boxes.get(e.target) || e.target;
    const hint = box.nextElementSibling;
    if (hint && hint.classList.contains("scroll-hint")) hint.hidden = box.scrollWidth <= box.clientWidth + 1;
  }
});

export function scrollBox(table, hint = "scroll sideways for more columns") {
  const box = h("div", { class: "scroll" }, table);
  boxes.set(table, box);
  overflowWatch.observe(box);
  overflowWatch.observe(table);
  return h("div", { class: "table-wrap" }, box, h("p", { class: "scroll-hint", hidden: true }, hint));
}

// Replace the table in a box made by scrollBox (rows re-rendered), keeping the hint in step.
export function swapTable(wrap, table) {
  const box = wrap.querySelector(".scroll");
  const old = box.firstElementChild;
  if (old) overflowWatch.unobserve(old);
  box.replaceChildren(table);
  boxes.set(table, box);
  overflowWatch.observe(table);
}

function cellText(v) {
  if (v && typeof v === "object") return JSON.stringify(v);
  return typeof v === "number" && !Number.isInteger(v) ? String(Number(v.toPrecision(4))) : String(v);
}

// rows: [key, value] or [key, value, tooltip]; objects become their JSON (wrapped, never wider than the page).
export function keyValueTable(obj, caption, { tips = {}, units = {} } = {}) {
  const rows = Object.entries(obj || {}).map(([k, v]) =>
    h("tr", {}, h("th", { scope: "row", title: tips[k] || null, class: tips[k] ? "term" : null }, k),
      h("td", { class: typeof v === "number" ? "num" : null }, cellText(v) + (units[k] ? ` ${units[k]}` : ""))));
  return h("table", { class: "kv" }, caption ? h("caption", {}, caption) : null, h("tbody", {}, rows));
}

// A table from a list of flat objects (columns: the union of their keys, first-seen order).
export function objectsTable(rows, caption, tips = {}) {
  const tip = typeof tips === "function" ? tips : (c) => tips[c] || null;
  const cols = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const cell = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : fmt(v)) : v === null || v === undefined ? "" :
    typeof v === "object" ? JSON.stringify(v) : String(v));
  return h("table", { class: "grid" }, caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col", title: tip(c), class: tip(c) ? "term" : null }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, cols.map((c) => h("td", { class: typeof r[c] === "number" ? "num" : null }, cell(r[c])))))));
}

export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
