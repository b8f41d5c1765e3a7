"""Causally-faithful matching: concept spaces, FAISS partitions, and the explainers over them.

- `groups.py`: T/C/A/N groups per query; `loss.py`: the ordered contrastive loss;
- `trainers.py`: projection head on frozen MiniLM (seconds) or full fine-tune;
- `index.py`: one FAISS index per (concept, value), exact or HNSW/IVF with calibrated recall;
- `space.py`: the space artifact (save/load/list/delete, search, hit-rate diagnostic);
- `explainers.py`: match, match_dr, pair_transfer, stacked (its NNLS weights and folds live in
  `explainers.estimators.crossfit`);
- `cebab.py`: `build_cebab_space` / `ensure_cebab_space`; `plugin.py`: registry + bench hook;
- `cli.py`: `cace spaces train|list|eval|delete`.
"""
