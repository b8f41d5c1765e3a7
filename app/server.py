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
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "data_dir": args.data_dir,
                                    "database_url": args.database_url}.items() if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from app.main import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
