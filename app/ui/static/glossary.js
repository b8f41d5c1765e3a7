// The words the pages use, said once: tooltips (title) on every term and the glossary under each page.

import { h } from "./dom.js";

export const TIPS = {
  icace: "ICaCE (individual causal concept effect): how much each label's probability changes for this text when " +
    "the concept is set to the target value, estimated from counterfactual texts (their mean prediction minus the " +
    "text's own).",
  cace: "CaCE (causal concept effect): the mean ICaCE over the texts the intervention changes.",
  spread: "Spread: how much the counterfactuals' predictions disagree, per label (standard deviation; scaled median " +
    "absolute deviation for median aggregation). Measured only with two or more counterfactuals.",
  interval: "Interval: a split-conformal interval for the ICaCE from the classifier's calibration on held-out " +
    "pairs, weighted towards the pairs whose base prediction looks like this text's; it holds the true effect at " +
    "the nominal coverage where the calibration describes the text (else the answer says it is not claimed).",
  similarity: "Similarity: cosine similarity between the text and the counterfactual in the domain's concept space " +
    "(1 = same direction).",
  k: "K: how many counterfactual texts the estimate averages over.",
  base: "The classifier's probability for the text as it is.",
  cfmean: "The mean probability over the counterfactuals (base + ICaCE).",
  ci: "Confidence interval: a bootstrap interval over the changed texts; with few texts it is unreliable.",
  readings: "The domain's concept taggers read every concept of the text and of each counterfactual; a counterfactual " +
    "should change the target concept only.",
  l2: "L2: Euclidean distance between the estimated and the true effect (lower is better).",
  cos: "Cos: cosine distance between the estimated and the true effect, 0 to 2 (lower is better).",
  normdiff: "NormDiff: difference of the effect sizes (norms), estimated against true (lower is better).",
  stack: "stack:K: a per concept and direction weighted mix of the methods at K counterfactuals (stack:0: at every K), " +
    "fitted on held-out pairs.",
  combiner: "combiner:NAME: a learned model that combines the methods' estimates, fitted on held-out pairs.",
  calibration: "Calibration: every estimator is scored on held-out pairs whose true effect is known; `auto` then " +
    "uses the best one per concept and direction and reports an interval.",
  heldout_pairs: "Held-out pairs: texts and their human-edited counterfactuals, not used to fit what is scored on them.",
  components: "Components: each estimator's ICaCE that `auto` combined.",
  expected_error: "Expected error: the chosen estimator's held-out error for this concept and direction.",
  n: "n: how many held-out pairs (or texts) the numbers rest on.",
};
// Calibration table columns and method-details keys, by their own names.
Object.assign(TIPS, {
  l2_: TIPS.l2, cos_: TIPS.cos, normdiff_: TIPS.normdiff,
  L2: TIPS.l2, Cos: TIPS.cos, NormDiff: TIPS.normdiff,
});

// A tooltip for a table column or key: exact names first, then families (stack:0, combiner:ridge).
export function tipFor(key) {
  const k = String(key);
  if (TIPS[k]) return TIPS[k];
  if (/^stack:\d+/.test(k)) return TIPS.stack;
  if (/^combiner:/.test(k)) return TIPS.combiner;
  const base = k.toLowerCase().replace(/[^a-z_]/g, "");
  return TIPS[base] || null;
}

export function term(text, tip) {
  return h("span", { class: "term", title: tip, tabindex: 0 }, text);
}

const ENTRIES = [
  ["ICaCE", TIPS.icace], ["CaCE", TIPS.cace], ["Spread", TIPS.spread], ["Interval", TIPS.interval],
  ["Confidence interval (CI)", TIPS.ci], ["Similarity", TIPS.similarity], ["K", TIPS.k],
  ["Tagger readings", TIPS.readings], ["Calibration", TIPS.calibration], ["Held-out pairs", TIPS.heldout_pairs],
  ["L2, Cos, NormDiff", `${TIPS.l2} ${TIPS.cos} ${TIPS.normdiff}`], ["stack:K, combiner:NAME", `${TIPS.stack} ${TIPS.combiner}`],
];

export function initGlossary() {
  const box = document.getElementById("glossary");
  if (!box) return;
  box.append(h("dl", { class: "glossary" }, ENTRIES.map(([t, d]) => [h("dt", {}, t), h("dd", {}, d.replace(/^[^:]+: /, ""))])));
}
