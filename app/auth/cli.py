"""Key management without the API: `python -m app.security create-key|list-keys|revoke-key|hash-key`.

This is how the first admin key is bootstrapped (the API never mints one anonymously).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import sqlalchemy as sa

from app.auth.keys import hash_key, key_store
from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """`python -m app.security create-key|list-keys|revoke-key|hash-key`: bootstrap keys without the API."""
    ap = argparse.ArgumentParser(prog="python -m app.security")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create-key")
    c.add_argument("--name", required=True)
    c.add_argument("--scopes", default="explain", help="comma-separated: explain,admin")
    c.add_argument(
        "--rate", type=float, default=None, help="requests/s for this key (> 0; default: the server's)"
    )
    sub.add_parser("list-keys")
    r = sub.add_parser("revoke-key")
    r.add_argument("id")
    h = sub.add_parser("hash-key", help="print the sha256 of a key for CACE_API_KEYS_FILE")
    h.add_argument("key")
    args = ap.parse_args(argv)
    if args.cmd == "hash-key":
        print(hash_key(args.key))
        return 0
    settings = Settings()
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    store = key_store(sa.create_engine(settings.job_store_url), settings)
    if args.cmd == "create-key":
        try:
            rec, plain = store.create(
                args.name, [s.strip() for s in args.scopes.split(",") if s.strip()], args.rate
            )
        except ValueError as e:
            ap.error(str(e))
        print(json.dumps({**rec.public(), "key": plain}))
    elif args.cmd == "list-keys":
        for k in store.list():
            print(json.dumps(k.public()))
    else:
        return 0 if store.revoke(args.id) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
