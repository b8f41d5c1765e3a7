"""`cace serve`: run the service with uvicorn (one process; job workers are threads inside it)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cace serve", description="Run the CaCE explanation service.")
    ap.add_argument("--host", default=None, help="bind address (default: CACE_HOST or 127.0.0.1)")
    ap.add_argument("--port", type=int, default=None, help="port (default: CACE_PORT or 8000)")
    ap.add_argument("--data-dir", type=Path, default=None, help="artifacts and SQLite store (CACE_DATA_DIR)")
    ap.add_argument("--database-url", default=None, help="job store URL, e.g. postgresql+psycopg://... ")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--prepare-only", action="store_true",
                    help="build or load the embedded defaults (classifier, pool, taggers, space), then exit")
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "data_dir": args.data_dir,
                                    "database_url": args.database_url}.items() if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.prepare_only:
        return prepare(settings)
    import uvicorn

    from app.main import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                timeout_graceful_shutdown=10)
    return 0


def prepare(settings: Settings) -> int:
    """Train or load every embedded default once, outside the server.

    A fresh machine's first start trains the taggers and the CEBaB space (minutes); doing it
    ahead (in an image build, an init container, or the test setup) makes start-up fast and
    keeps several processes from training the same artifacts at once.
    """
    from app.resources import Runtime
    from app.store import Store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rt = Runtime(settings, Store(settings.job_store_url, settings.table_prefix))
    rt.load_defaults()
    for comp in rt.components.values():
        print(f"{comp.name:<10} {comp.status:<11} {comp.seconds:>8}s  {comp.detail}")
    return 0 if all(c.status == "ready" for c in rt.components.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
