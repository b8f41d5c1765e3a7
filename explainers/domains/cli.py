"""`cace domains`: build a domain from a JSONL corpus, list domains, show or delete one.

    cace domains build movies corpus.jsonl [--schema schema.json] [--root var/domains]
    cace domains build reviews texts.jsonl --schema defs.json --llm-base-url http://127.0.0.1:8080/v1 \
        --llm-model smollm2 [--max-llm-calls 5000] [--dry-run]     # no labels: an LLM labels and edits
    cace domains list [--root var/domains]
    cace domains show movies
    cace domains delete movies

`--root` defaults to the service's domains folder, `$CACE_DATA_DIR/domains` (`var/domains`
when unset; `cace` passes the service settings on, `.env` included), so `cace domains list`
shows what the service serves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from explainers.artifacts import META, read_meta


def default_root() -> Path:
    """The service's domains folder: <CACE_DATA_DIR>/domains."""
    return Path(os.environ.get("CACE_DATA_DIR") or "var") / "domains"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cace domains", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser(
        "build", help="build a domain from a JSONL corpus ({text, labels, origin?, id?} per line)"
    )
    b.add_argument("id")
    b.add_argument("corpus", type=Path)
    b.add_argument("--schema", type=Path, help="concept schema JSON (default: inferred from the labels)")
    b.add_argument(
        "--llm-base-url", help="OpenAI-compatible LLM (…/v1) that labels and edits unlabelled texts"
    )
    b.add_argument("--llm-model", help="the LLM's model name")
    b.add_argument("--max-llm-calls", type=int, default=20000, help="the build's LLM call budget")
    b.add_argument(
        "--edits-per-direction", type=int, help="edits per concept direction (default: the budget's)"
    )
    b.add_argument("--concurrency", type=int, default=4, help="LLM requests in flight")
    b.add_argument("--dry-run", action="store_true", help="print the LLM plan (calls, tokens, time) and stop")
    for p in (b, sub.add_parser("list"), sub.add_parser("show"), sub.add_parser("delete")):
        p.add_argument(
            "--root", type=Path, default=None, help="domains folder (default: $CACE_DATA_DIR/domains)"
        )
    for name in ("show", "delete"):
        sub.choices[name].add_argument("id")
    args = ap.parse_args(argv)
    args.root = args.root if args.root is not None else default_root()

    if args.cmd == "build":
        from explainers.concepts import ConceptSchema
        from explainers.domains import (
            DOMAIN_ID,
            DomainBuildError,
            build_domain,
            infer_schema,
            pool_from_rows,
            validate_rows,
        )
        from explainers.embeddings import Encoder
        from explainers.jsonl import split_lines

        if not DOMAIN_ID.match(args.id):
            ap.error(f"domain id must match {DOMAIN_ID.pattern}")
        schema = ConceptSchema.from_dict(json.loads(args.schema.read_text())) if args.schema else None
        try:
            rows = validate_rows(split_lines(args.corpus.read_text(encoding="utf-8")), schema)
        except DomainBuildError as e:
            print(f"{args.corpus}: {e}")
            return 2
        schema = schema or infer_schema(rows, name=args.id)
        unlabelled = [c for c in schema.names if not any(c in r["labels"] for r in rows)]
        if unlabelled or args.llm_base_url:
            from explainers.domains.zero_label import cli_build

            return cli_build(args, rows, schema)
        domain = build_domain(args.root, args.id, pool_from_rows(rows, schema), encoder=Encoder(), log=print)
        print(json.dumps({k: domain.meta[k] for k in ("stats", "taggers", "space", "methods")}, indent=1))
        return 0
    if args.cmd == "list":
        found = sorted(args.root.glob("*/meta.json"))
        for d in found:
            meta = read_meta(d.parent, "domain")
            names = [c["name"] for c in meta["schema"]["concepts"]]
            print(f"{d.parent.name:<24} {meta['stats']['texts']:>7} texts  concepts {names}")
        building = sorted(p.name for p in args.root.glob("*.building-*"))
        if building:
            print(f"being built (or left by a killed build): {', '.join(building)}", file=sys.stderr)
        if not found:
            where = "does not exist" if not args.root.is_dir() else "holds no domain"
            print(
                f"no domains: {args.root} {where} (the service's folder is $CACE_DATA_DIR/domains, "
                "CACE_DATA_DIR="
                f"{os.environ.get('CACE_DATA_DIR') or 'unset, so var'}; the default domain is built there "
                "on the service's first start, or use --root)",
                file=sys.stderr,
            )
        return 0
    path = args.root / args.id
    if not (path / META).exists():
        print(f"no domain {args.id!r} under {args.root}")
        return 1
    if args.cmd == "show":
        print(json.dumps(read_meta(path, "domain"), indent=1))
    else:
        read_meta(path, "domain")  # refuse to delete a folder that is not a domain
        shutil.rmtree(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
