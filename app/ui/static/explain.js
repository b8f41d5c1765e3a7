// The Explain page: one text, one intervention, the ICaCE with its counterfactuals.

import { api } from "./api.js";
import { distributionChart, effectChart, miniBars } from "./charts.js";
import { renderDiff } from "./diff.js";
import { $, fmt, h, keyValueTable, showProblem, signed } from "./dom.js";
import { readParams } from "./params.js";

export function initExplain() {
  $("explain-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("explain-text").value;
    const err = $("explain-error");
    if (!text.trim()) {
      showProblem(err, { title: "Missing text", detail: "Type or paste a text to explain." });
      $("explain-text").focus();
      return;
    }
    const body = { text, ...readParams("explain") };
    const button = $("explain-submit");
    button.disabled = true;
    button.textContent = "Explaining…";
    showProblem(err, null);
    try {
      const res = await api("/v1/explanations", { method: "POST", json: body });
      renderExplanation($("explain-result"), text, res);
    } catch (e) {
      $("explain-result").hidden = true;
      showProblem(err, e);
    } finally {
      button.disabled = false;
      button.textContent = "Explain";
    }
  });
}

function verdict(cf, concept, target) {
  const v = cf.verification;
  if (!v) return null;
  const tags = v.tags || {};
  const read = tags[concept];
  const ok = read === undefined || read === target;
  return h("div", { class: "verification" },
    h("span", { class: `badge ${ok ? "ok" : "warn"}` }, ok ? "verified" : "kept, tagger disagrees"),
    read !== undefined ? ` taggers read ${concept} = ${read}` : " (no tagger check)",
    v.round ? `, round ${v.round}` : "",
    Object.keys(tags).length ? h("span", { class: "tags" }, " · ",
      Object.entries(tags).filter(([c]) => c !== concept).map(([c, x]) => `${c}: ${x}`).join(", ")) : null);
}

export function renderExplanation(box, text, res) {
  const labels = res.labels;
  const cfMean = Object.fromEntries(labels.map((l) => [l, res.base_prediction[l] + res.icace[l]]));
  const spread = res.uncertainty.spread;
  // A calibrated `auto` answer carries a conformal interval; otherwise the whiskers are ± the spread.
  const conformal = res.uncertainty.interval;
  const low = Object.fromEntries(labels.map((l) => [l, conformal ? conformal[l][0] : res.icace[l] - spread[l]]));
  const high = Object.fromEntries(labels.map((l) => [l, conformal ? conformal[l][1] : res.icace[l] + spread[l]]));
  const whiskers = conformal
    ? `whiskers: the ${Math.round((res.uncertainty.coverage || 0.9) * 100)}% conformal interval from the calibration`
    : "whiskers ± one standard deviation over the counterfactuals";
  const iv = res.intervention;
  const top = (p) => labels.reduce((a, b) => (p[b] > p[a] ? b : a));

  const summary = h("p", { class: "summary", id: "explain-summary" },
    h("strong", {}, iv.concept), ": ", h("span", { id: "explain-inferred-source" }, iv.source),
    iv.source_inferred ? h("span", { class: "badge", title: "the concept taggers inferred the source value" }, "inferred") : null,
    " → ", h("strong", {}, iv.target), ` · ${res.method} · ${res.classifier}`,
    res.domain ? ` · domain ${res.domain}` : "", res.space_id ? ` · space ${res.space_id}` : "",
    res.pool && res.pool.texts ? ` (${res.pool.texts} texts)` : "", res.llm ? ` · LLM ${res.llm}` : "",
    ` · ${res.uncertainty.n_counterfactuals} counterfactual${res.uncertainty.n_counterfactuals === 1 ? "" : "s"}`);

  const numbers = h("table", { class: "grid numbers", id: "explain-numbers" },
    h("caption", {}, "Per label: probabilities, ICaCE and the spread over the counterfactuals"),
    h("thead", {}, h("tr", {}, ["label", "base p", "counterfactual mean p", "ICaCE", "spread"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, labels.map((l) => h("tr", { "data-label": l },
      h("th", { scope: "row" }, l), h("td", { class: "num base" }, fmt(res.base_prediction[l])),
      h("td", { class: "num cf" }, fmt(cfMean[l])), h("td", { class: "num icace" }, signed(res.icace[l])),
      h("td", { class: "num spread" }, fmt(spread[l]))))));

  const cfs = h("ol", { class: "counterfactuals", id: "explain-counterfactuals" }, res.counterfactuals.map((cf, i) =>
    h("li", { class: "cf-card" },
      h("div", { class: "cf-head" },
        h("span", { class: "cf-n" }, `#${i + 1}`),
        cf.similarity !== null && cf.similarity !== undefined ? h("span", { class: "sim" }, `similarity ${fmt(cf.similarity)}`) : null,
        cf.prediction ? h("span", { class: "pred" }, `predicts ${top(cf.prediction)} (${fmt(cf.prediction[top(cf.prediction)], 2)})`) : null,
        cf.source_id ? h("span", { class: "src" }, cf.source_id) : null),
      h("div", { class: "cf-body" }, renderDiff(text, cf.text), cf.prediction ? miniBars(labels, cf.prediction) : null),
      verdict(cf, iv.concept, iv.target))));

  const d = res.details || {};
  const extras = [];
  if (d.note) extras.push(h("p", { class: "note" }, d.note));
  if (d.rejections) {
    const rej = Object.entries(d.rejections);
    extras.push(h("div", { class: "generation", id: "explain-generation" },
      h("h4", {}, "Generation and verification"),
      h("p", {}, `asked for ${d.samples_asked ?? "?"} samples in ${d.rounds ?? "?"} round(s), ${d.generated ?? "?"} generated, ` +
        `${d.kept ?? "?"} kept of ${d.requested ?? "?"} wanted` + (d.verified_by_tagger ? ", checked by the concept taggers" : "")),
      rej.length ? keyValueTable(d.rejections, "Rejected, by reason") : h("p", {}, "No sample was rejected."),
      d.errors ? h("ul", { class: "errors" }, d.errors.map((e) => h("li", {}, e))) : null));
  }
  const cost = { ...res.cost, ...Object.fromEntries(Object.entries(res.timings).map(([k, v]) => [k, v])) };
  const rest = Object.fromEntries(Object.entries(d).filter(([k]) =>
    !["rejections", "note", "errors", "cost", "requested", "kept", "samples_asked", "generated", "rounds"].includes(k)));

  box.replaceChildren(
    summary,
    h("div", { class: "charts" },
      h("figure", {}, distributionChart(labels, res.base_prediction, cfMean),
        h("figcaption", {}, "Base prediction beside the counterfactuals' mean")),
      h("figure", {}, effectChart(labels, res.icace, low, high, { name: "ICaCE", interval: conformal ? "interval" : "± spread" }),
        h("figcaption", {}, `ICaCE per label, ${whiskers}`))),
    numbers,
    h("h3", {}, "Counterfactuals"),
    res.counterfactuals.length ? cfs : h("p", { class: "note", id: "explain-no-counterfactuals" },
      "No counterfactual was used, so the estimate is zero" + (d.rejections ? ": every generated rewrite failed verification (see below)." : ".")),
    ...extras,
    h("div", { class: "side-by-side" }, keyValueTable(cost, "Cost and timings"),
      res.uncertainty.expected_error ? keyValueTable(res.uncertainty.expected_error, "Expected error (held-out pairs)") : null,
      Object.keys(rest).length ? h("details", {}, h("summary", {}, "Method details"), keyValueTable(rest)) : null),
  );
  box.hidden = false;
}
