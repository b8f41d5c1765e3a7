"""A report or comparison (the JSON `summarize_*` returns) as JSON, CSV, Markdown or one HTML page.

The HTML page is self-contained: inline CSS and inline SVG drawn here (a heatmap of cells x
labels, a forest plot of each cell's largest effect with its CI), no script, nothing fetched.
Every string from the data (texts, concept and value names) is escaped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

FORMATS = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
}


def render(result: Mapping[str, Any], fmt: str, *, title: str | None = None) -> str:
    """`result` in one of FORMATS."""
    if fmt == "json":
        return json.dumps(result, indent=2)
    if fmt == "csv":
        return to_csv(result)
    if fmt == "md":
        return to_markdown(result, title=title)
    if fmt == "html":
        return to_html(result, title=title)
    raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")


def _is_comparison(result: Mapping[str, Any]) -> bool:
    return result.get("kind") == "comparison"


def _value(cell: Mapping[str, Any], label: str, result: Mapping[str, Any]) -> float:
    """The number a cell shows for a label: the CaCE (report) or the CaCE difference (comparison)."""
    return float(cell["diff"][label] if _is_comparison(result) else cell["cace"][label])


def to_csv(result: Mapping[str, Any]) -> str:
    """One row per (cell, label)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    labels = result["labels"]
    if _is_comparison(result):
        a, b = result["classifiers"]
        w.writerow(
            ["rank", "concept", "source", "target", "label", f"cace_{a}", f"cace_{b}", "diff", "ci_low",
             "ci_high", "shift", "threshold", "flagged", "significant", "n_changed"]
        )  # fmt: skip
        for c in result["cells"]:
            for lab in labels:
                w.writerow(
                    [c["rank"], c["concept"], c["source"], c["target"], lab, c["cace"][a][lab], c["cace"][b][lab],
                     c["diff"][lab], c["ci_low"][lab], c["ci_high"][lab], c["shift"], c["threshold"],
                     c["flagged"], c["significant"], c["n_changed"]]
                )  # fmt: skip
    else:
        w.writerow(
            ["rank", "concept", "source", "target", "label", "cace", "ci_low", "ci_high", "n_texts",
             "n_changed", "effect", "placebo_cace", "p_value", "p_holm", "above_noise", "expected_error_l2"]
        )  # fmt: skip
        for c in result["cells"]:
            pl = c.get("placebo") or {}
            cal = c.get("calibration") or {}
            expected = (cal.get("expected_error") or {}).get("l2")
            for lab in labels:
                w.writerow(
                    [c["rank"], c["concept"], c["source"], c["target"], lab, c["cace"][lab], c["ci_low"][lab],
                     c["ci_high"][lab], c["n_texts"], c["n_changed"], c["effect"],
                     (pl.get("cace") or {}).get(lab), pl.get("p_value"), pl.get("p_holm"),
                     pl.get("above_noise"), expected]
                )  # fmt: skip
    return buf.getvalue()


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{float(x):+.{digits}f}"


def to_markdown(result: Mapping[str, Any], *, title: str | None = None) -> str:
    labels = result["labels"]
    lines = [f"# {_md(title or _default_title(result))}", ""]
    if _is_comparison(result):
        a, b = result["classifiers"]
        lines += [
            f"CaCE({_md(b)}) − CaCE({_md(a)}) per cell on the same counterfactuals; "
            f"{result['confidence']:.0%} paired bootstrap CIs; flagged when the largest |difference| "
            f"exceeds the threshold ({result['n_flagged']} flagged).",
            "",
            "| rank | cell | n | " + " | ".join(_md(x) for x in labels) + " | shift | flagged |",
            "|---|---|---|" + "---|" * len(labels) + "---|---|",
        ]
        for c in result["cells"]:
            vals = [f"{_fmt(c['diff'][x])} [{_fmt(c['ci_low'][x])}, {_fmt(c['ci_high'][x])}]" for x in labels]
            flag = f"**yes** (> {c['threshold']})" if c["flagged"] else "no"
            lines.append(
                f"| {c['rank']} | {_md(c['key'])} | {c['n_changed']} | "
                + " | ".join(vals)
                + f" | {c['shift']:.3f} | {flag} |"
            )
    else:
        lines += [
            f"CaCE per label with {result['confidence']:.0%} bootstrap CIs, ranked by effect size "
            "(largest |CaCE|); p: sign-flip test of the effect against a placebo search with the "
            f"concept's labels shuffled, Holm-corrected over {len(result['cells'])} cells.",
            "",
            "| rank | cell | n | " + " | ".join(_md(x) for x in labels) + " | p (Holm) | above noise |",
            "|---|---|---|" + "---|" * len(labels) + "---|---|",
        ]
        for c in result["cells"]:
            vals = [f"{_fmt(c['cace'][x])} [{_fmt(c['ci_low'][x])}, {_fmt(c['ci_high'][x])}]" for x in labels]
            pl = c.get("placebo") or {}
            p = f"{pl['p_holm']:.3g}" if "p_holm" in pl else "–"
            noise = "**yes**" if pl.get("above_noise") else "no"
            lines.append(
                f"| {c['rank']} | {_md(c['key'])} | {c['n_changed']} | "
                + " | ".join(vals)
                + f" | {p} | {noise} |"
            )
    if result.get("skipped"):
        lines += ["", "Skipped cells:", ""]
        lines += [f"- {_md(s['key'])}: {_md(s['reason'])}" for s in result["skipped"]]
    lines += ["", "## The texts each cell moved most", ""]
    for c in result["cells"][:10]:
        lines.append(f"### {_md(c['key'])}")
        for t in c.get("top_texts", []):
            lines.append(f"- {_md(t.get('text'))}")
            for cf in t.get("counterfactuals", [])[:1]:
                lines.append(f"  - counterfactual: {_md(cf['text'])}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _default_title(result: Mapping[str, Any]) -> str:
    if _is_comparison(result):
        a, b = result["classifiers"]
        return f"Comparison: {b} vs {a}"
    return "Model report"


def _color(value: float, scale: float) -> str:
    """Diverging scale: blue for a negative value, red for a positive one, white at zero."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    if t >= 0:
        r, g, b = 255, int(255 - 180 * t), int(255 - 180 * t)
    else:
        r, g, b = int(255 + 180 * t), int(255 + 180 * t), 255
    return f"rgb({r},{g},{b})"


def heatmap_svg(result: Mapping[str, Any]) -> str:
    """Cells (rows, grouped by concept) x labels (columns), colored by CaCE (or CaCE difference)."""
    labels = result["labels"]
    cells = sorted(result["cells"], key=lambda c: (c["concept"], c["source"], c["target"]))
    if not cells:
        return "<p>No cell to draw.</p>"
    scale = max(abs(_value(c, x, result)) for c in cells for x in labels) or 1.0
    left, top, cw, ch = 220, 30, 70, 22
    width, height = left + cw * len(labels) + 10, top + ch * len(cells) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="heatmap of effects per cell and label" font-family="sans-serif" font-size="12">'
    ]
    for j, lab in enumerate(labels):
        parts.append(
            f'<text x="{left + cw * j + cw / 2}" y="{top - 10}" text-anchor="middle">{escape(str(lab))}</text>'
        )
    for i, c in enumerate(cells):
        y = top + ch * i
        parts.append(f'<text x="{left - 6}" y="{y + ch * 0.7}" text-anchor="end">{escape(c["key"])}</text>')
        for j, lab in enumerate(labels):
            v = _value(c, lab, result)
            parts.append(
                f'<rect x="{left + cw * j}" y="{y}" width="{cw - 1}" height="{ch - 1}" fill="{_color(v, scale)}">'
                f"<title>{escape(c['key'])} {escape(str(lab))}: {v:+.4f}</title></rect>"
                f'<text x="{left + cw * j + cw / 2}" y="{y + ch * 0.7}" text-anchor="middle">{v:+.3f}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def forest_svg(result: Mapping[str, Any]) -> str:
    """One row per cell (ranked): its largest effect (or shift) with the CI, a line at zero."""
    cells = result["cells"]
    if not cells:
        return "<p>No cell to draw.</p>"
    comparison = _is_comparison(result)
    rows = []
    for c in cells:
        lab = c["shift_label"] if comparison else c["effect_label"]
        rows.append((c, lab, _value(c, lab, result), float(c["ci_low"][lab]), float(c["ci_high"][lab])))
    lo = min(min(r[3] for r in rows), 0.0)
    hi = max(max(r[4] for r in rows), 0.0)
    if comparison:
        limit = max(float(c["threshold"]) for c in cells)
        lo, hi = min(lo, -limit), max(hi, limit)
    span = (hi - lo) or 1.0
    left, top, plot_w, rh = 300, 20, 420, 20
    width, height = left + plot_w + 70, top + rh * len(rows) + 30

    def x(v: float) -> float:
        return left + (v - lo) / span * plot_w

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="forest plot of effects with confidence intervals" font-family="sans-serif" font-size="12">',
        f'<line x1="{x(0)}" y1="{top - 5}" x2="{x(0)}" y2="{height - 25}" stroke="#888"/>',
    ]
    if comparison:
        for c in {float(c["threshold"]) for c in cells}:
            for v in (-c, c):
                parts.append(
                    f'<line x1="{x(v)}" y1="{top - 5}" x2="{x(v)}" y2="{height - 25}" stroke="#d33" '
                    'stroke-dasharray="4 3"/>'
                )
    for i, (c, lab, v, low, h) in enumerate(rows):
        y = top + rh * i + rh / 2
        marked = c.get("flagged") if comparison else (c.get("placebo") or {}).get("above_noise")
        color = "#c0392b" if marked else "#2c3e50"
        parts.append(
            f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{escape(c["key"])} ({escape(str(lab))})</text>'
            f'<line x1="{x(low)}" y1="{y}" x2="{x(h)}" y2="{y}" stroke="{color}" stroke-width="2"/>'
            f'<circle cx="{x(v)}" cy="{y}" r="4" fill="{color}"><title>{v:+.4f} [{low:+.4f}, {h:+.4f}]</title></circle>'
            f'<text x="{left + plot_w + 8}" y="{y + 4}">{v:+.3f}</text>'
        )
    parts.append(
        f'<text x="{x(lo)}" y="{height - 8}">{lo:+.2f}</text>'
        f'<text x="{x(hi)}" y="{height - 8}" text-anchor="end">{hi:+.2f}</text></svg>'
    )
    return "".join(parts)


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3}.yes{color:#c0392b;font-weight:bold}.cf{color:#555}details{margin:.4em 0}"""


def to_html(result: Mapping[str, Any], *, title: str | None = None) -> str:
    """One self-contained page: summary, heatmap, forest plot, the table, the texts each cell moved most."""
    title = title or _default_title(result)
    labels: Sequence[str] = result["labels"]
    comparison = _is_comparison(result)
    head = "".join(f"<th>{escape(str(x))}</th>" for x in labels)
    rows = []
    for c in result["cells"]:
        vals = "".join(
            f"<td>{_value(c, x, result):+.3f}<br><small>[{float(c['ci_low'][x]):+.3f}, "
            f"{float(c['ci_high'][x]):+.3f}]</small></td>"
            for x in labels
        )
        if comparison:
            extra = f"<td>{c['shift']:.3f}</td><td class='{'yes' if c['flagged'] else ''}'>{'yes' if c['flagged'] else 'no'}</td>"
        else:
            pl = c.get("placebo") or {}
            p = f"{pl['p_holm']:.3g}" if "p_holm" in pl else "–"
            yes = bool(pl.get("above_noise"))
            extra = f"<td>{p}</td><td class='{'yes' if yes else ''}'>{'yes' if yes else 'no'}</td>"
        rows.append(
            f"<tr><td>{c['rank']}</td><td>{escape(c['key'])}</td><td>{c['n_changed']}</td>{vals}{extra}</tr>"
        )
    tail = "<th>shift</th><th>flagged</th>" if comparison else "<th>p (Holm)</th><th>above noise</th>"
    texts = []
    for c in result["cells"][:20]:
        items = []
        for t in c.get("top_texts", []):
            cfs = "".join(
                f"<li class='cf'>→ {escape(str(cf['text']))}</li>" for cf in t.get("counterfactuals", [])
            )
            items.append(f"<li>{escape(str(t.get('text')))}<ul>{cfs}</ul></li>")
        texts.append(f"<details><summary>{escape(c['key'])}</summary><ul>{''.join(items)}</ul></details>")
    skipped = "".join(
        f"<li>{escape(s['key'])}: {escape(s['reason'])}</li>" for s in result.get("skipped", [])
    )
    summary = (
        f"CaCE({escape(result['classifiers'][1])}) − CaCE({escape(result['classifiers'][0])}) on the same "
        f"counterfactuals; {result['n_flagged']} cell(s) beyond the threshold."
        if comparison
        else "CaCE per label with bootstrap CIs; cells ranked by effect size; placebo p-values Holm-corrected."
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><p>{summary}</p>"
        f"<h2>Heatmap</h2>{heatmap_svg(result)}<h2>Forest plot</h2>{forest_svg(result)}"
        f"<h2>Cells</h2><table><tr><th>rank</th><th>cell</th><th>n</th>{head}{tail}</tr>{''.join(rows)}</table>"
        + (f"<h2>Skipped cells</h2><ul>{skipped}</ul>" if skipped else "")
        + f"<h2>Texts each cell moved most</h2>{''.join(texts)}</body></html>\n"
    )
