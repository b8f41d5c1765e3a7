"""The web UI: one HTML page at /ui and its scripts and styles at /ui/static/<name>.

No framework and no build step: plain ES modules and SVG, all served from this package, so
the page works with no internet. The files are read once at import into memory (a few tens
of KB), which also means a request can only ever name one of them: there is no path to
traverse. The page is public (it holds no data); every API call it makes carries the key
the user typed into the Keys tab, so the API's own authentication applies unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.problems import not_found

STATIC_DIR = Path(__file__).parent / "static"
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Scripts and styles only from this server; no inline code, no frames, no plugins.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _load() -> dict[str, tuple[bytes, str, str]]:
    files: dict[str, tuple[bytes, str, str]] = {}
    for path in sorted(STATIC_DIR.iterdir()):
        if path.is_file() and path.suffix in TYPES:
            body = path.read_bytes()
            files[path.name] = (body, TYPES[path.suffix], '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    return files


FILES = _load()
router = APIRouter(include_in_schema=False)


def _send(request: Request, name: str) -> Response:
    if name not in FILES:
        raise not_found("UI file", name)
    body, media_type, etag = FILES[name]
    # Revalidated on every load (cheap: a 304), so a new server version never runs stale scripts.
    headers = {**HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.api_route("/ui", methods=["GET", "HEAD"])
def page(request: Request) -> Response:
    return _send(request, "index.html")


@router.get("/ui/")
def page_slash() -> RedirectResponse:
    # Relative, so it also works behind a path prefix; the page's own links are relative to /ui.
    return RedirectResponse("../ui", status_code=308)


@router.api_route("/ui/static/{name}", methods=["GET", "HEAD"])
def static(name: str, request: Request) -> Response:
    return _send(request, name)
