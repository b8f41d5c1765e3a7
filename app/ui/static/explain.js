// The Explain page: one text, one intervention, the ICaCE with its counterfactuals.

import { api } from "./api.js";
import { distributionChart, drawCharts, effectChart, fitted, miniBars } from "./charts.js";
import { renderDiff } from "./diff.js";
import { $, fmt, h, keyValueTable, scrollBox, showProblem, signed } from "./dom.js";
import { TIPS, term } from "./glossary.js";
import { domainTask, labelName, readParams } from "./params.js";

export function initExplain(onExplained) {
  $("explain-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    explainNow(onExplained);
  });
}

// Run the form's request (also when a shared URL restored the form).
export async function explainNow(onExplained) {
  const text = $("explain-text").value;
  const err = $("explain-error");
  const button = $("explain-submit");
  if (button.disabled) return; // not ready (the button says why) or already explaining
  if (!text.trim()) {
    showProblem(err, { title: "Missing text", detail: "Type or paste a text to explain." });
    $("explain-text").focus();
    return;
  }
  const body = { text, ...readParams("explain") };
  button.disabled = true;
  button.textContent = "Explaining…";
  showProblem(err, null);
  if (onExplained) onExplained(body);
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
}

// A generated rewrite's verification: a badge only where a tagger read the target concept.
function verdict(cf, concept, target) {
  const v = cf.verification;
  if (!v) return null;
  const tags = v.tags || {};
  const read = tags[concept];
  if (read === undefined) {
    // Pool counterfactuals carry facts about how they were found (e.g. confounders matched), not a check.
    const facts = Object.entries(v).filter(([k]) => k !== "tags").map(([k, x]) => `${k.replace(/_/g, " ")}: ${x}`);
    return facts.length ? h("div", { class: "verification facts" }, facts.join(" · ")) : null;
  }
  const ok = read === target;
  return h("div", { class: "verification" },
    h("span", { class: `badge ${ok ? "ok" : "warn"}`, title: "read by the domain's concept tagger after generation" },
      ok ? "verified" : "kept, tagger disagrees"),
    ` taggers read ${concept} = ${read}`, v.round ? `, round ${v.round}` : "");
}

// The domain's taggers' reading of every concept, before and after; a warning where a concept other
// than the target changed (the counterfactual then changes more than the intervention).
function conceptCheck(cf, res) {
  const before = res.base_concepts, after = cf.concepts;
  if (!before || !after) return null;
  const { concept, target } = res.intervention;
  const others = Object.keys(before).filter((c) => c !== concept && after[c] !== before[c]);
  const reached = after[concept] === undefined ? null : after[concept] === target;
  return h("div", { class: "concept-check", "data-other-changed": others.join(",") },
    reached === null ? null : h("span", { class: `badge ${reached ? "ok" : "warn"} target-check`,
      title: `the domain's tagger reads ${concept} = ${after[concept]} in this counterfactual` },
    reached ? `tagger reads ${concept} = ${target}` : `tagger reads ${concept} = ${after[concept]}, not ${target}`),
    others.length ? h("span", { class: "badge warn other-warning", title: "a concept other than the target changed: the " +
      "effect mixes in that change" }, `also changed: ${others.join(", ")}`) : null,
    h("span", { class: "readings" }, " ", term("Taggers read", TIPS.readings), ": ",
      Object.keys(before).map((c, i) => {
        const changed = after[c] !== before[c];
        return h("span", { class: `reading${changed ? " changed" : ""}${changed && c !== concept ? " other-changed" : ""}`,
          "data-concept": c, "data-before": before[c], "data-after": after[c] ?? "" },
        i ? " · " : "", changed ? `${c} ${before[c]} → ${after[c] ?? "?"}` : `${c} ${before[c]}`);
      })));
}

// Cost and timings with readable names and units; zero counts folded away.
const COST_NAMES = {
  classifier_calls: ["classifier calls", ""], classifier_texts: ["texts the classifier scored", ""],
  llm_calls: ["LLM calls (generation)", ""], prompt_tokens: ["LLM prompt tokens", ""],
  completion_tokens: ["LLM completion tokens", ""], wall_time_s: ["method wall time", "s"],
  classifier_llm_calls: ["classifier's own LLM calls", ""], classifier_prompt_tokens: ["classifier's prompt tokens", ""],
  classifier_completion_tokens: ["classifier's completion tokens", ""],
  total_ms: ["total time of the request", "ms"], source_inference_ms: ["inferring the source value", "ms"],
  explain_ms: ["explaining", "ms"], concepts_ms: ["reading every concept", "ms"],
  waited_ms: ["waiting to start (body, auth, a free worker)", "ms"], resolve_ms: ["finding domain, classifier and explainer", "ms"],
  lock_wait_ms: ["waiting for the explainer", "ms"],
};

function costTable(cost, timings) {
  const all = { ...cost, ...timings };
  const shown = Object.entries(all).filter(([, v]) => v !== 0 && v !== null && v !== undefined);
  const zero = Object.entries(all).filter(([, v]) => v === 0).map(([k]) => (COST_NAMES[k] || [k])[0]);
  const value = (k, v) => {
    const unit = (COST_NAMES[k] || [k, ""])[1];
    if (typeof v !== "number") return String(v);
    const n = Number.isInteger(v) ? String(v) : unit === "s" ? v.toFixed(3) : v.toFixed(1);
    return unit ? `${n} ${unit}` : n;
  };
  return h("div", { class: "cost" },
    h("table", { class: "kv cost-table", id: "explain-cost" }, h("caption", {}, "Cost and timings"),
      h("tbody", {}, shown.map(([k, v]) => h("tr", { "data-key": k },
        h("th", { scope: "row", title: k }, (COST_NAMES[k] || [k])[0]), h("td", { class: "num" }, value(k, v)))))),
    zero.length ? h("p", { class: "folded" }, `none: ${zero.join(", ")}`) : null);
}

export function renderExplanation(box, text, res) {
  const labels = res.labels;
  const name = (l) => labelName(res.domain, l);
  const cfMean = Object.fromEntries(labels.map((l) => [l, res.base_prediction[l] + res.icace[l]]));
  const u = res.uncertainty;
  const spread = u.spread;
  // The spread is measured only over two or more counterfactuals; below that there is none to show.
  const measured = u.n_counterfactuals >= 2;
  // A calibrated `auto` answer carries a conformal interval: that is its uncertainty.
  const conformal = u.interval;
  const coverage = Math.round((u.coverage || 0.9) * 100);
  const pick = (f, g) => Object.fromEntries(labels.map((l) => [l, conformal ? f(l) : measured ? g(l) : NaN]));
  const low = pick((l) => conformal[l][0], (l) => res.icace[l] - spread[l]);
  const high = pick((l) => conformal[l][1], (l) => res.icace[l] + spread[l]);
  const whiskers = conformal ? `whiskers: the ${coverage}% conformal interval from the calibration`
    : measured ? "whiskers: ± the spread of the counterfactuals' predictions"
      : "no whiskers: fewer than two counterfactuals, so no spread was measured";
  const iv = res.intervention;
  const top = (p) => labels.reduce((a, b) => (p[b] > p[a] ? b : a));

  const summary = h("p", { class: "summary", id: "explain-summary" },
    h("strong", {}, iv.concept), ": ", h("span", { id: "explain-inferred-source" }, iv.source),
    iv.source_inferred ? h("span", { class: "badge", title: "the concept taggers inferred the source value" }, "inferred") : null,
    " → ", h("strong", {}, iv.target), ` · ${res.method} · ${res.classifier}`,
    res.domain ? ` · domain ${res.domain}` : "", res.space_id ? ` · space ${res.space_id}` : "",
    res.pool && res.pool.texts ? ` (${res.pool.texts} texts)` : "", res.llm ? ` · LLM ${res.llm}` : "",
    ` · ${u.n_counterfactuals} counterfactual${u.n_counterfactuals === 1 ? "" : "s"}`);

  const cols = [["label", null], ["base p", TIPS.base], ["counterfactual mean p", TIPS.cfmean], ["ICaCE", TIPS.icace],
    ...(conformal ? [[`${coverage}% interval`, TIPS.interval]] : []), ["spread", TIPS.spread]];
  const numbers = h("table", { class: "grid numbers", id: "explain-numbers" },
    h("caption", {}, conformal ? `Per label: probabilities, ICaCE and its ${coverage}% interval`
      : "Per label: probabilities, ICaCE and the spread over the counterfactuals",
    domainTask(res.domain) ? h("small", { class: "task" }, ` (labels: ${domainTask(res.domain)})`) : null),
    h("thead", {}, h("tr", {}, cols.map(([c, tip]) => h("th", { scope: "col", title: tip, class: tip ? "term" : null }, c)))),
    h("tbody", {}, labels.map((l) => h("tr", { "data-label": l },
      h("th", { scope: "row" }, name(l)), h("td", { class: "num base" }, fmt(res.base_prediction[l])),
      h("td", { class: "num cf" }, fmt(cfMean[l])), h("td", { class: "num icace" }, signed(res.icace[l])),
      conformal ? h("td", { class: "num interval" }, `[${signed(conformal[l][0])}, ${signed(conformal[l][1])}]`) : null,
      h("td", { class: "num spread", title: measured ? null : "not measured: fewer than two counterfactuals" },
        measured ? fmt(spread[l]) : "not measured")))));

  const cfs = h("ol", { class: "counterfactuals", id: "explain-counterfactuals" }, res.counterfactuals.map((cf, i) =>
    h("li", { class: "cf-card" },
      h("div", { class: "cf-head" },
        h("span", { class: "cf-n" }, `#${i + 1}`),
        cf.similarity !== null && cf.similarity !== undefined
          ? h("span", { class: "sim", title: TIPS.similarity }, `similarity ${fmt(cf.similarity)}`) : null,
        cf.prediction ? h("span", { class: "pred" }, `predicts ${name(top(cf.prediction))} (${fmt(cf.prediction[top(cf.prediction)], 2)})`) : null,
        cf.source_id ? h("span", { class: "src" }, cf.source_id) : null),
      h("div", { class: "cf-body" }, renderDiff(text, cf.text), cf.prediction ? miniBars(labels, cf.prediction) : null),
      conceptCheck(cf, res),
      verdict(cf, iv.concept, iv.target))));

  const d = res.details || {};
  const extras = [];
  if (d.note) extras.push(h("p", { class: "note" }, d.note));
  // A zero-width interval is measured, not missing: the calibration's estimates were exact there.
  if (d.interval && d.interval.note) extras.push(h("p", { class: "note", id: "explain-interval-note" }, d.interval.note));
  // The calibration's numbers hold only where its pairs looked like this text (explainers/estimators/shift.py).
  if (u.valid === false && u.situation) {
    extras.push(h("p", { class: "note warn", id: "explain-situation" },
      `The interval and expected error are not claimed for this text: ${u.situation.why || "outside the calibration"}` +
      (u.situation.fallback ? `. Answered by the robust fallback ${u.situation.fallback}.` : ".")));
  }
  if (d.rejections) {
    const rej = Object.entries(d.rejections);
    extras.push(h("div", { class: "generation", id: "explain-generation" },
      h("h4", {}, "Generation and verification"),
      h("p", {}, `asked for ${d.samples_asked ?? "?"} samples in ${d.rounds ?? "?"} round(s), ${d.generated ?? "?"} generated, ` +
        `${d.kept ?? "?"} kept of ${d.requested ?? "?"} wanted` + (d.verified_by_tagger ? ", checked by the concept taggers" : "")),
      rej.length ? keyValueTable(d.rejections, "Rejected, by reason") : h("p", {}, "No sample was rejected."),
      d.errors ? h("ul", { class: "errors" }, d.errors.map((e) => h("li", {}, e))) : null));
  }
  const rest = Object.fromEntries(Object.entries(d).filter(([k]) =>
    !["rejections", "note", "errors", "cost", "requested", "kept", "samples_asked", "generated", "rounds"].includes(k)));

  box.replaceChildren(
    summary,
    h("div", { class: "charts" },
      h("figure", {}, fitted((w) => distributionChart(labels, res.base_prediction, cfMean, w)),
        h("figcaption", {}, "Base prediction beside the counterfactuals' mean")),
      h("figure", {}, fitted((w) => effectChart(labels, res.icace, low, high,
        { name: "ICaCE", interval: conformal ? "interval" : measured ? "± spread" : "no spread", width: w })),
      h("figcaption", { id: "explain-whiskers" }, "ICaCE per label, ", whiskers))),
    scrollBox(numbers),
    h("h3", {}, "Counterfactuals"),
    res.counterfactuals.length ? cfs : h("p", { class: "note", id: "explain-no-counterfactuals" },
      "No counterfactual was used, so the estimate is zero" + (d.rejections ? ": every generated rewrite failed verification (see below)." : ".")),
    ...extras,
    h("div", { class: "side-by-side" }, costTable(res.cost, res.timings),
      u.expected_error ? keyValueTable(u.expected_error, "Expected error (held-out pairs)", { tips: TIPS }) : null,
      Object.keys(rest).length ? h("details", { id: "explain-method-details" }, h("summary", {}, "Method details"),
        keyValueTable(rest, null, { tips: TIPS })) : null),
  );
  box.hidden = false;
  drawCharts(box);
}
