"""Model reports and model comparisons: every concept's effect on a classifier in one pass.

- `report.py`: the cells of a domain (every concept and source -> target direction), one
  counterfactual search per (text, concept, target) scored by one or more classifiers, a
  placebo search with the concept's labels shuffled, and the report (CaCE with CIs, placebo
  p-values with Holm's correction, ranking, the texts each cell moved most);
- `compare.py`: two classifiers on the same counterfactuals, per-cell CaCE differences with
  paired bootstrap CIs, cells beyond a threshold flagged;
- `render.py`: CSV, Markdown and one self-contained HTML page (inline SVG heatmap and forest plot).
"""

from explainers.reports.compare import summarize_comparison
from explainers.reports.render import render
from explainers.reports.report import Cell, ReportScorer, plan_cells, summarize_report

__all__ = ["Cell", "ReportScorer", "plan_cells", "render", "summarize_comparison", "summarize_report"]
