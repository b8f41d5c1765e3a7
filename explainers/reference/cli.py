"""`cace classifiers train|eval|serve`: the reference classifiers from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from explainers.artifacts import META, read_meta
from explainers.reference import REFERENCE_MODELS, ensure_reference, evaluate, load_reference


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="cace classifiers", description="Train, evaluate or serve the reference classifiers."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a reference classifier")
    t.add_argument("name", choices=REFERENCE_MODELS)
    t.add_argument("--root", type=Path, default=Path("var"))
    t.add_argument("--data", type=Path, default=None)
    t.add_argument("--force", action="store_true")
    e = sub.add_parser("eval", help="accuracy of a classifier on a CEBaB split (rated reviews)")
    e.add_argument(
        "classifier", help="reference name (trained under --root if missing) or artifact directory"
    )
    e.add_argument("--split", default="dev", help="split name or path to a split file")
    e.add_argument("--root", type=Path, default=Path("var"))
    e.add_argument("--data", type=Path, default=None)
    s = sub.add_parser("serve", help="serve a classifier over HTTP (HF JSON, Open Inference V2, KServe V1)")
    s.add_argument(
        "classifier", help="artifact directory, .joblib file, or reference name (tfidf-lr, minilm-ft)"
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--name", help="model name in V2/V1 routes (default: the artifact's name)")
    s.add_argument("--root", help="where reference classifiers are kept (default $CACE_DATA_DIR or var)")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        out = Path(args.root) / "classifiers" / args.name
        if args.force and (out / META).exists():
            (out / META).unlink()
        path = ensure_reference(args.name, args.root, args.data)
        print(read_meta(path))
    elif args.cmd == "eval":
        path = (
            ensure_reference(args.classifier, args.root, args.data)
            if args.classifier in REFERENCE_MODELS
            else Path(args.classifier)
        )
        print(json.dumps(evaluate(load_reference(path), args.split, args.data), indent=2))
    elif args.cmd == "serve":
        from explainers.serving import serve

        serve(args.classifier, args.host, args.port, name=args.name, root=args.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
