"""`cace spaces train|list|delete|eval`: manage concept spaces from the command line.

    cace spaces train --split train_inclusive --trainer head --root var
    cace spaces train --split train_exclusive --generate-base-url http://127.0.0.1:8080/v1 \
        --generate-model qwen --generate-sources 400 --root var   # + LLM-generated counterfactuals
    cace spaces list --root var
    cace spaces eval cebab-train_inclusive-head --root var     # hit rates, trained vs pretrained
    cace spaces delete cebab-train_inclusive-head --root var
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explainers.matching.trainers import TrainConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cace spaces", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a CEBaB concept space (one projection per concept)")
    t.add_argument("--split", default="train_inclusive", help="split name or file the pool is built from")
    t.add_argument("--trainer", default="head", choices=("head", "full", "none"))
    t.add_argument("--root", type=Path, default=Path("var"))
    t.add_argument("--data", type=Path, default=None, help="folder with the CEBaB split files")
    t.add_argument("--name", default=None)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--tau", type=float, default=0.1)
    t.add_argument(
        "--lambdas", default=None, help='e.g. "TC=1,TA=1,AC=1" (the paper) ; default TC=1,TA=1,AN=1'
    )
    t.add_argument("--max-steps", type=int, default=None, help="full trainer: stop after this many steps")
    g = t.add_argument_group("LLM-generated counterfactual groups (for a split without human edits)")
    g.add_argument("--generate-base-url", default=None, help="OpenAI-compatible /v1 URL of the LLM")
    g.add_argument("--generate-model", default=None)
    g.add_argument("--generate-sources", type=int, default=None, help="texts to edit (default: all)")
    g.add_argument("--generate-concepts", type=int, default=2, help="concepts edited per text")
    g.add_argument("--generate-cache", type=Path, default=None, help="SQLite cache (makes a rerun resume)")
    g.add_argument("--generate-taggers", type=Path, default=None, help="verify edits with these taggers")
    for name in ("list", "delete", "eval"):
        s = sub.add_parser(name)
        s.add_argument("--root", type=Path, default=Path("var"))
        if name != "list":
            s.add_argument("name")
    args = p.parse_args(argv)
    spaces_root = args.root / "spaces"
    if args.cmd == "train":
        from explainers.matching.cebab import build_cebab_space

        cfg = (
            TrainConfig(lr=5e-6, batch_size=8, max_a=4, max_n=4, epochs=1)
            if args.trainer == "full"
            else TrainConfig()
        )
        cfg.tau = args.tau
        if args.epochs is not None:
            cfg.epochs = args.epochs
        if args.lr is not None:
            cfg.lr = args.lr
        if args.max_steps is not None:
            cfg.max_steps = args.max_steps
        if args.lambdas:
            cfg.lambdas = {
                k.strip(): float(v) for k, _, v in (x.partition("=") for x in args.lambdas.split(","))
            }
        augment = None
        if args.generate_base_url:
            from explainers.matching.augment import llm_augmenter

            augment = llm_augmenter(
                args.generate_base_url,
                args.generate_model or "default",
                n_sources=args.generate_sources,
                concepts_per_source=args.generate_concepts,
                cache=args.generate_cache,
                taggers=args.generate_taggers,
                log=lambda m: print(m, file=sys.stderr),
            )
        out = build_cebab_space(
            args.root,
            args.split,
            args.trainer,
            args.data,
            name=args.name,
            config=cfg,
            augment=augment,
            log=lambda m: print(m, file=sys.stderr),
        )
        print(out)
        return 0
    if args.cmd == "list":
        from explainers.matching.space import list_spaces

        for listed in list_spaces(spaces_root):
            print(json.dumps(listed))
        return 0
    if args.cmd == "delete":
        from explainers.matching.space import delete_space

        if not delete_space(spaces_root, args.name):
            print(f"no space {args.name!r} under {spaces_root}", file=sys.stderr)
            return 1
        print(f"deleted {args.name}")
        return 0
    from explainers.artifacts import read_meta

    meta = read_meta(spaces_root / args.name, "concept_space")
    print(
        json.dumps(
            {
                k: meta.get(k)
                for k in (
                    "name",
                    "trainer",
                    "train_split",
                    "pool_size",
                    "n_pairs",
                    "diagnostics",
                    "stacking",
                    "config",
                    "build_seconds",
                )
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
