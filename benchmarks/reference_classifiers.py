"""Reference classifiers on CEBaB dev: accuracy, training cost and in-process throughput.

For each reference model (tfidf-lr, minilm-ft) this loads the artifact under --root
(training it first if missing, via `ensure_reference`), re-scores dev (accuracy, macro-F1,
mean absolute rating error) and measures in-process texts/s. tfidf-lr is retrained every
run (seconds). minilm-ft's training time is read from its meta.json (where and how long it
trained); `--measure-steps N` also times N CPU optimiser steps of the same training loop
and extrapolates to the full run, the number that matters on a CPU-only machine.

    python -m benchmarks.reference_classifiers [--root var] [--data DIR] [--measure-steps 20]

Writes benchmarks/results/reference_classifiers.md and prints the same markdown.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.harness import RESULTS  # noqa: E402
from explainers.artifacts import read_meta  # noqa: E402
from explainers.data.cebab import load_split  # noqa: E402
from explainers.reference import ensure_reference, evaluate, load_reference, rated, train_tfidf_lr  # noqa: E402

OUT = RESULTS / "reference_classifiers.md"


def cpu_step_seconds(steps: int, data_dir: Path | None, meta: dict) -> float:
    """Seconds per optimiser step of minilm-ft's training loop on this CPU (2 threads)."""
    from explainers.reference.minilm import fine_tune

    texts, y = rated(load_split("train_exclusive", data_dir))
    bs = int(meta.get("batch_size", 16))
    with tempfile.TemporaryDirectory() as tmp:
        facts = fine_tune(
            texts[: steps * bs],
            y[: steps * bs],
            Path(tmp),
            epochs=1,
            batch_size=bs,
            lr=float(meta.get("lr", 1e-4)),
        )
    return facts["train_seconds"] / facts["steps"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("var"))
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument(
        "--measure-steps", type=int, default=0, help="time this many minilm-ft CPU steps (0: skip)"
    )
    args = ap.parse_args(argv)
    rows = []
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        meta = train_tfidf_lr(Path(tmp) / "tfidf-lr", args.data)
        ev = evaluate(load_reference(Path(tmp) / "tfidf-lr"), "dev", args.data)
        rows.append(("tfidf-lr", "sklearn", ev, f"{meta['train_seconds']:.1f} (this CPU, measured now)"))
    path = ensure_reference("minilm-ft", args.root, args.data)
    meta = read_meta(path, "classifier")
    ev = evaluate(load_reference(path), "dev", args.data)
    where = meta.get("trained_device", "this machine's CPU")
    train_cell = f"{meta['train_seconds']:.1f} ({where})"
    if meta.get("cpu_train_seconds_estimate"):
        train_cell += f"; CPU 2 threads ≈ {meta['cpu_train_seconds_estimate']:.0f}"
    if args.measure_steps:
        per = cpu_step_seconds(args.measure_steps, args.data, meta)
        train_cell += f"; here {per:.2f} s/step x {meta['steps']} ≈ {per * meta['steps']:.0f}"
        notes.append(f"Measured {args.measure_steps} minilm-ft steps on this CPU: {per:.2f} s/step.")
    rows.append(("minilm-ft", "transformers", ev, train_cell))
    if abs(ev["accuracy"] - meta["dev_accuracy"]) > 1e-4:
        notes.append(f"minilm-ft re-scored {ev['accuracy']} vs {meta['dev_accuracy']} in its meta.json.")
    header = ["model", "format", "dev accuracy", "macro-F1", "MAE (stars)", "train seconds", "dev texts/s"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, fmt, e, train in rows:
        table.append(
            f"| {name} | {fmt} | {e['accuracy']:.4f} | {e['macro_f1']:.4f} | {e['mae']:.3f} | {train} "
            f"| {e['texts_per_second']:.0f} |"
        )
    md = "\n".join(
        [
            "# Reference classifiers on CEBaB dev",
            "",
            f"5-way review_majority, trained on train_exclusive (no majority dropped); dev has {ev['n']} rated "
            "reviews. Throughput is in-process `predict_proba` over all of dev, torch at 2 threads, on a 2-core "
            "machine shared with other jobs (a lower bound).",
            "",
            *table,
            "",
            *notes,
            "",
            "Command: `python -m benchmarks.reference_classifiers`",
            "",
        ]
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
