"""`cace serve`: run the service with uvicorn (one process; job workers are threads inside it)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

from app.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cace serve", description="Run the CaCE explanation service.")
    ap.add_argument("--host", default=None, help="bind address (default: CACE_HOST or 127.0.0.1)")
    ap.add_argument("--port", type=int, default=None, help="port (default: CACE_PORT or 8000)")
    ap.add_argument("--data-dir", type=Path, default=None, help="artifacts and SQLite store (CACE_DATA_DIR)")
    ap.add_argument("--database-url", default=None, help="job store URL, e.g. postgresql+psycopg://... ")
    ap.add_argument("--log-level", default="info")
    ap.add_argument(
        "--prepare-only",
        action="store_true",
        help="build or load the embedded defaults (classifier, pool, taggers, space), then exit",
    )
    args = ap.parse_args(argv)
    overrides = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "data_dir": args.data_dir,
            "database_url": args.database_url,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except SettingsError as e:  # fail closed: name each bad variable, no traceback
        print(f"cace serve: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.prepare_only:
        return prepare(settings)
    refusal = open_exposure(settings)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    import uvicorn

    from app.main import create_app

    # X-Forwarded-For is believed only from the proxies the operator lists (uvicorn trusts
    # 127.0.0.1 by default, which would let any local client pick its rate-limit identity).
    proxies = ",".join(settings.auth.trusted_proxies)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )
    return 0


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_exposure(settings: Settings) -> str | None:
    """Why the service must not start: bound beyond loopback with no API key, unless CACE_ALLOW_OPEN=true.

    With no key, every route is open, including registrations that load models and call
    out; on a network address that is anyone's server.
    """
    if is_loopback(settings.host) or settings.auth.allow_open:
        return None
    if settings.auth.enabled or settings.auth.admin_key or settings.auth.api_keys_file:
        return None
    import sqlalchemy as sa

    from app.auth.keys import key_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(settings.job_store_url)
    try:
        if key_store(engine, settings).active_count() > 0:
            return None
    finally:
        engine.dispose()
    return (
        f"refusing to serve on {settings.host}:{settings.port} without API keys: anyone who can reach it "
        "could register models and use the server's network. Create an admin key first "
        "(`python -m app.security create-key --name admin --scopes admin`), or set CACE_ADMIN_KEY or "
        "CACE_API_KEYS_FILE; or set CACE_ALLOW_OPEN=true if this network is trusted."
    )


def prepare(settings: Settings) -> int:
    """Train or load every embedded default once, outside the server.

    A fresh machine's first start builds the default domain (taggers, space; minutes); doing it
    ahead (in an image build, an init container, or the test setup) makes start-up fast and
    keeps several processes from training the same artifacts at once.
    """
    from app.resources import Runtime
    from app.store import Store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rt = Runtime(settings, Store(settings.job_store_url, settings.table_prefix))
    rt.load_defaults(prewarm=False)
    for comp in rt.components.values():
        print(f"{comp.name:<10} {comp.status:<11} {comp.seconds:>8}s  {comp.detail}")
    return 0 if all(c.status == "ready" for c in rt.components.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
