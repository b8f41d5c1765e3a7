// SVG charts: class distributions side by side, and signed effects with an interval.

import { fmt, h, s, signed } from "./dom.js";

// Charts are drawn at the width they get on screen (viewBox = pixels), so their text keeps its
// CSS size (11-12 px) on a phone as on a desktop; they are redrawn when that width changes.
const draws = new WeakMap(); // slot -> draw(width)
const resized = new ResizeObserver((entries) => {
  for (const e of entries) drawSlot(e.target);
});

function drawSlot(slot) {
  // The exact (fractional) width, so one viewBox unit is one CSS pixel and 11 px text stays 11 px.
  const width = slot.getBoundingClientRect().width;
  if (width <= 0 || Math.abs(Number(slot.dataset.width) - width) < 0.5) return;
  slot.dataset.width = String(width);
  slot.replaceChildren(draws.get(slot)(Math.max(260, width)));
}

// A box that holds a chart drawn by build(width); drawCharts() draws it once it is on the page.
export function fitted(build) {
  const slot = h("div", { class: "chart-slot" });
  draws.set(slot, build);
  resized.observe(slot);
  return slot;
}

// Draw every chart under root now (synchronously, so the result is complete when it appears).
export function drawCharts(root) {
  for (const slot of root.querySelectorAll(".chart-slot")) drawSlot(slot);
}

// Base distribution beside the counterfactuals' mean (base + ICaCE), one pair of bars per label.
export function distributionChart(labels, base, cf, width = 560) {
  const W = width, twoLines = W < 420, top = 22, bottom = twoLines ? 50 : 36, left = 40, right = 10;
  const H = 194 + bottom;
  const plotH = H - top - bottom;
  const slot = (W - left - right) / labels.length;
  const bw = Math.min(34, slot * 0.34);
  const y = (p) => top + plotH * (1 - Math.max(0, Math.min(1, p)));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart dist", role: "img",
    "aria-label": "Class probabilities: base text versus the counterfactuals' mean" });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(s("line", { x1: left, x2: W - right, y1: y(t), y2: y(t), class: "grid-line" }),
      s("text", { x: left - 6, y: y(t) + 4, class: "tick", "text-anchor": "end" }, t.toFixed(2)));
  }
  labels.forEach((lab, i) => {
    const cx = left + slot * (i + 0.5);
    for (const [series, value, dx] of [["base", base[lab], -bw - 2], ["cf", cf[lab], 2]]) {
      const v = Math.max(0, Math.min(1, value));
      svg.append(s("rect", { x: cx + dx, y: y(v), width: bw, height: Math.max(0.5, y(0) - y(v)),
        class: `bar ${series}`, "data-label": lab, "data-series": series, "data-value": value },
      s("title", {}, `${series === "base" ? "base" : "counterfactual mean"} p(${lab}) = ${fmt(value)}`)),
      // The value over its bar where the bar is wide enough to carry it (the table has every number).
      ...(bw >= 24 ? [s("text", { x: cx + dx + bw / 2, y: y(v) - 4, class: "value", "text-anchor": "middle" }, fmt(value, 2))] : []));
    }
    svg.append(s("text", { x: cx, y: H - bottom + 16, class: "axis-label", "text-anchor": "middle" }, lab));
  });
  svg.append(s("line", { x1: left, x2: W - right, y1: y(0), y2: y(0), class: "axis" }));
  // On a narrow chart the second legend entry goes on its own line.
  const [x2, y2] = twoLines ? [0, 0] : [90, 0];
  const legend = s("g", { class: "legend", transform: `translate(${twoLines ? 8 : left},${H - (twoLines ? 22 : 8)})` },
    s("rect", { x: 0, y: -9, width: 10, height: 10, class: "bar base" }), s("text", { x: 14, y: 0 }, "base text"),
    s("g", { transform: `translate(${x2},${twoLines ? 16 : y2})` },
      s("rect", { x: 0, y: -9, width: 10, height: 10, class: "bar cf" }),
      s("text", { x: 14, y: 0 }, "counterfactuals' mean (base + ICaCE)")));
  svg.append(legend);
  return svg;
}

// Signed effect per label as a bar from zero, with a whisker from low to high (spread or CI).
export function effectChart(labels, center, low, high, { name = "ICaCE", interval = "spread", width = 560 } = {}) {
  const rowH = 30, top = 24, left = 46, right = 64, W = width;
  const H = top + rowH * labels.length + 10;
  const vals = labels.flatMap((l) => [center[l], low[l], high[l]]).filter((v) => Number.isFinite(v));
  const m = Math.max(0.05, ...vals.map(Math.abs)) * 1.1;
  const x = (v) => left + ((v + m) / (2 * m)) * (W - left - right);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart effect", role: "img",
    "aria-label": `${name} per label with its ${interval}` });
  for (const t of [-m, -m / 2, 0, m / 2, m]) {
    svg.append(s("line", { x1: x(t), x2: x(t), y1: top - 6, y2: H - 10, class: t === 0 ? "axis" : "grid-line" }),
      s("text", { x: x(t), y: top - 10, class: "tick", "text-anchor": "middle" }, signed(t, 2)));
  }
  labels.forEach((lab, i) => {
    const cy = top + rowH * i + rowH / 2;
    const v = center[lab];
    const x0 = Math.min(x(0), x(v)), w = Math.abs(x(v) - x(0));
    svg.append(s("text", { x: left - 8, y: cy + 4, class: "axis-label", "text-anchor": "end" }, lab),
      s("rect", { x: x0, y: cy - 8, width: Math.max(w, 0.5), height: 16, class: `bar ${v >= 0 ? "pos" : "neg"}`,
        "data-label": lab, "data-value": v },
      s("title", {}, `${name}(${lab}) = ${signed(v)}; ${interval} [${fmt(low[lab])}, ${fmt(high[lab])}]`)));
    if (Number.isFinite(low[lab]) && Number.isFinite(high[lab])) {
      svg.append(s("line", { x1: x(low[lab]), x2: x(high[lab]), y1: cy, y2: cy, class: "whisker interval",
        "data-label": lab, "data-low": low[lab], "data-high": high[lab] }),
        s("line", { x1: x(low[lab]), x2: x(low[lab]), y1: cy - 5, y2: cy + 5, class: "whisker" }),
        s("line", { x1: x(high[lab]), x2: x(high[lab]), y1: cy - 5, y2: cy + 5, class: "whisker" }));
    }
    svg.append(s("text", { x: W - right + 6, y: cy + 4, class: "value" }, signed(v)));
  });
  return svg;
}

// A one-line probability strip for a counterfactual's own prediction.
export function miniBars(labels, probs) {
  const W = 150, H = 28, bw = W / labels.length;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H + 12}`, class: "chart mini", role: "img",
    "aria-label": "prediction: " + labels.map((l) => `${l} ${fmt(probs[l], 2)}`).join(", ") });
  labels.forEach((lab, i) => {
    const p = Math.max(0, Math.min(1, probs[lab]));
    svg.append(s("rect", { x: i * bw + 2, y: H - H * p, width: bw - 4, height: Math.max(0.5, H * p), class: "bar cf" },
      s("title", {}, `p(${lab}) = ${fmt(probs[lab])}`)),
    s("text", { x: i * bw + bw / 2, y: H + 11, class: "tick", "text-anchor": "middle" }, lab));
  });
  return svg;
}
