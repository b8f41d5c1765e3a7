"""Who may call the service: API keys (`keys`), the auth + rate-limit middleware (`middleware`),
the `/v1/keys` routes (`router`) and the key CLI (`cli`, also `python -m app.security`).

`app.main.create_app` wires these in; see deploy/README.md for the threat model.
"""

from app.auth.keys import SCOPES, KeyRecord, KeyStore, hash_key, key_store
from app.auth.middleware import AuthMiddleware, required_scope

__all__ = ["SCOPES", "AuthMiddleware", "KeyRecord", "KeyStore", "hash_key", "key_store", "required_scope"]
