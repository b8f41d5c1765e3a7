"""`cace calibrate`: fit a Calibration of a classifier on a domain's corpus (a concept space's pool and pairs).

    cace calibrate --classifier tfidf-lr --space var/spaces/cebab-train_inclusive-head \\
        --out var/calibrations/tfidf-lr [--ks 5,10,20,50] [--max-pairs 4000] [--max-classifier-texts 100000]

The corpus is the pool a trained space holds (texts, concept labels, origins and the
counterfactual pairs between them), so any domain a space was trained on can be
calibrated. `--classifier` is a reference name (trained under --root if missing) or a
classifier artifact folder. Prints the per-method table on the held-out pairs and the
choice per (concept, direction); `--methods` limits the components.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explainers.artifacts import META
from explainers.estimators.calibration_fit import DEFAULT_COMBINERS, DEFAULT_KS, DEFAULT_METHODS, calibrate


def _ints(value: str) -> list[int]:
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from e


def _names(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def load_classifier(spec: str, root: Path):
    from explainers.artifacts import read_meta
    from explainers.reference import REFERENCE_MODELS, ensure_reference, load_reference

    path = ensure_reference(spec, root) if spec in REFERENCE_MODELS else Path(spec)
    if not (path / META).exists():
        raise SystemExit(
            f"--classifier {spec!r}: neither a reference name {REFERENCE_MODELS} nor an artifact folder"
        )
    meta = read_meta(path, "classifier")
    return load_reference(path), str(meta.get("name") or path.name)


def _ids(path: Path) -> list[str]:
    if not path.is_file():
        raise SystemExit(f"--trained-on {path}: no such file")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="cace calibrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--classifier", required=True)
    ap.add_argument(
        "--space", type=Path, required=True, help="a trained concept space folder (its pool is the corpus)"
    )
    ap.add_argument("--out", type=Path, required=True, help="folder to write the calibration to")
    ap.add_argument("--root", type=Path, default=Path("var"), help="where reference classifiers live")
    ap.add_argument("--methods", type=_names, default=list(DEFAULT_METHODS))
    ap.add_argument("--ks", type=_ints, default=list(DEFAULT_KS))
    ap.add_argument("--combiners", type=_names, default=list(DEFAULT_COMBINERS))
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--max-pairs", type=int, default=4000)
    ap.add_argument("--max-classifier-texts", type=int, default=100_000)
    ap.add_argument("--coverage", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--trained-on",
        type=Path,
        default=None,
        help="file of pool text ids (one per line) the classifier was trained on: pairs touching them are "
        "left out of the fit when enough others remain, and the calibration reports the memorisation",
    )
    args = ap.parse_args(argv)
    from explainers.matching.space import ConceptSpace

    if not (args.space / META).exists():
        raise SystemExit(f"--space {args.space}: no concept space there (no meta.json)")
    space = ConceptSpace.load(args.space)
    classifier, name = load_classifier(args.classifier, args.root)
    cal = calibrate(
        classifier,
        space.pool,
        space,
        space.encoder,
        methods=args.methods,
        ks=args.ks,
        folds=args.folds,
        max_pairs=args.max_pairs,
        max_classifier_texts=args.max_classifier_texts,
        coverage=args.coverage,
        combiners=args.combiners,
        classifier_name=name,
        seed=args.seed,
        trained_on=_ids(args.trained_on) if args.trained_on else None,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    out = cal.save(args.out)
    print("| candidate | L2 macro | Cos macro | ND macro |\n|---|---|---|---|")
    for cand, row in sorted(cal.report["candidates"].items(), key=lambda kv: kv[1]["macro"]["l2"]):
        m = row["macro"]
        print(f"| {cand} | {m['l2']:.4f} | {m['cos']:.4f} | {m['normdiff']:.4f} |")
    a = cal.report["auto"]["macro"]
    print(
        f"\nauto (held-out, cross-fitted): L2 {a['l2']:.4f} Cos {a['cos']:.4f}; default {cal.default}; "
        f"choice {json.dumps(cal.choice)}"
    )
    print(f"cost {cal.meta['cost']}; fingerprint {cal.meta['classifier']['fingerprint']}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
