"""`python -m app.security create-key|list-keys|revoke-key|hash-key`: the key CLI, kept at its documented name.

The security layer itself lives in `app.auth` (keys, middleware, routes, CLI) and
`app.specs` (what inline and registered specs may do); `app.main` wires them in.
"""

from __future__ import annotations

from app.auth.cli import main
from app.auth.keys import KeyRecord, KeyStore, hash_key

__all__ = ["KeyRecord", "KeyStore", "hash_key", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
