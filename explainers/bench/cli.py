"""`cace bench cebab`: the CEBaB faithfulness table for any classifier, explainers and split file.

    cace bench cebab --model tfidf-lr --split dev --k 1,5,10
    cace bench cebab --model var/classifiers/minilm-ft --split /path/to/test.json --explainers zero,approx
    cace bench list          # registered explainers

`--limit N` runs a deterministic subset of N pairs stratified over (concept, direction).
`--resource KEY=VALUE` (repeatable) passes options to resource hooks that method modules
register; `--option KEY=VALUE` passes an option to every requested method that declares it
(e.g. `aggregation=similarity_weighted`); an option none of them declares is an error.

Spaces: every method that searches a concept space uses the default trained space
(<root>/spaces/cebab-train_inclusive-head, trained on first use) unless `--resource
space=PATH` names another or `--resource space=none` asks for none; the table's `space`
column says what each row used. `--resource calibration=PATH` gives `auto` a calibration
(`cace calibrate`). `stacked` looks its weights up under the classifier's name; the
weights each stack used are printed under the table. A requested method that cannot run
is an error (exit status 2), before anything is scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from explainers.artifacts import META
from explainers.bench import runner

# Methods that search a trained concept space when one is given (pair_transfer: else the pretrained encoder).
SPACE_METHODS = ("match", "match_dr", "pair_transfer", "pair_transfer_logit", "stacked", "auto")


def _kv(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)  # numbers, booleans, null
        except json.JSONDecodeError:
            out[k] = v
    return out


def _cebab_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cebab", help="ICaCE error of explainers on CEBaB counterfactual pairs")
    p.add_argument("--data", type=Path, default=None, help="folder with the CEBaB split files")
    p.add_argument("--split", default="dev", help="split name or path to a split file (the test split too)")
    p.add_argument("--model", default="tfidf-lr", help="tfidf-lr | minilm-ft | path to a classifier artifact")
    p.add_argument("--root", type=Path, default=Path("var"), help="where reference classifiers live")
    p.add_argument("--explainers", default=",".join(runner.DEFAULT_EXPLAINERS))
    p.add_argument("--k", default="1,5,10", help="comma-separated K values")
    p.add_argument("--pool", default="train_inclusive", help="split name or file the matchers search")
    p.add_argument("--limit", type=int, default=None, help="stratified subset of N pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown output (JSON beside it); default benchmarks/results/cebab_<model>_<split>.md",
    )
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--resource", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--keep-overlap",
        action="store_true",
        help="keep benchmark texts that also occur in the pool (by default they are removed from it)",
    )


def run_cebab(args: argparse.Namespace) -> int:
    ks = [int(k) for k in str(args.k).split(",") if k.strip()]
    names = [n.strip() for n in args.explainers.split(",") if n.strip()]
    unused = sorted(set(_kv(args.option)) - runner.declared_options(names))
    if unused:
        print(f"error: no requested method takes option(s) {unused}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    classifier, model_name, meta = runner.load_model(args.model, args.root, args.data)
    pairs = runner.load_bench_pairs(args.split, args.data, args.limit, args.seed)
    exclude = () if args.keep_overlap else runner.benchmark_texts(pairs)
    res_opts = _kv(args.resource)
    res_opts.setdefault("model", model_name)  # stacked's stack key: weights fit for this classifier
    space_opt = str(res_opts.pop("space", "default"))
    resources = runner.build_bench_resources(
        args.pool, args.data, seed=args.seed, exclude_texts=exclude, **res_opts
    )
    if space_opt not in ("none", "default"):
        res_opts["space"] = space_opt
        _attach_space(resources, space_opt)
    elif space_opt == "default" and any(n in SPACE_METHODS for n in names):
        _attach_space(resources, None, root=args.root, data=args.data)
    overlap = runner.check_overlap(pairs, resources)
    config = {
        "model": model_name,
        "model_path": str(args.model),
        "model_dev_accuracy": meta.get("dev_accuracy"),
        "split": str(args.split),
        "pool": str(args.pool),
        "limit": args.limit,
        "seed": args.seed,
        "ks": ks,
        "explainers": names,
        "options": _kv(args.option),
        "resources": _kv(args.resource),
        "pool_overlap": overlap,
    }

    def progress(row: runner.BenchRow) -> None:
        s = row.summary
        print(
            f"  {row.explainer:<16} K={row.k:<3} L2 micro {s.micro['l2']:.4f} macro {s.macro['l2']:.4f} "
            f"Cos macro {s.macro['cos']:.4f} ({row.wall_s:.1f}s)",
            file=sys.stderr,
            flush=True,
        )

    print(f"{len(pairs)} pairs, pool {len(resources.pool or [])} texts, model {model_name}", file=sys.stderr)
    try:
        result = runner.run_benchmark(
            classifier,
            pairs,
            resources,
            names,
            ks,
            explainer_options=_kv(args.option),
            on_row=progress,
            config=config,
            strict=True,
        )
    except runner.BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.config["total_s"] = round(time.perf_counter() - started, 1)
    print(runner.render_markdown(result))
    if not args.no_write:
        out = args.out or runner.default_out(model_name, args.split, args.limit)
        md, js = runner.write_result(result, out)
        print(f"wrote {md} and {js}", file=sys.stderr)
    return 1 if result.errors and not result.rows else 0


def _attach_space(
    resources: Any, path: str | None, root: Path = Path("var"), data: Path | None = None
) -> None:
    """Load a space (the default trained one when path is None) restricted to the run's pool texts."""
    from explainers.matching.cebab import ensure_cebab_space, without_texts
    from explainers.matching.space import ConceptSpace

    if path is None:
        space = ensure_cebab_space(
            root, data_dir=data, encoder=resources.encoder, log=lambda m: print(m, file=sys.stderr)
        )
    else:
        if not (Path(path) / META).exists():
            raise SystemExit(f"--resource space={path}: no concept space there (no meta.json)")
        space = ConceptSpace.load(Path(path), encoder=resources.encoder)
    if resources.pool is not None:
        keep = set(resources.pool.texts)
        space = without_texts(space, [t for t in space.pool.texts if t not in keep])
    resources.space = space


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="cace bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    _cebab_parser(sub)
    sub.add_parser("list", help="registered explainers")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        from explainers.registry import available

        for name, desc in available().items():
            print(f"{name:<18} {desc}")
        return 0
    return run_cebab(args)


if __name__ == "__main__":
    raise SystemExit(main())
