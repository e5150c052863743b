"""The pages the gateway serves: the live scores demo (`/demo/scores`) and the
admin console (`/admin`). Plain HTML, CSS and ES modules from gateway/static: no
build step, no CDN. Also mounts the console's APIs (gateway/admin_api.py)."""

from __future__ import annotations

import functools
import mimetypes
from pathlib import Path

from fastapi import APIRouter, Response

from gateway.admin_api import router as admin_api_router
from shared.errors import NotFound

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}

router = APIRouter()
router.include_router(admin_api_router)


@functools.cache
def _read(rel: str) -> bytes | None:
    path = (STATIC / rel).resolve()
    # Only files under static/: a `..` in the URL must not reach the rest of the disk.
    if STATIC not in path.parents or not path.is_file():
        return None
    return path.read_bytes()


def _serve(rel: str) -> Response:
    body = _read(rel)
    if body is None:
        raise NotFound(f"no such file: {rel}")
    suffix = Path(rel).suffix
    ctype = _TYPES.get(suffix) or mimetypes.guess_type(rel)[0] or "application/octet-stream"
    return Response(
        body,
        media_type=f"{ctype}; charset=utf-8" if ctype.startswith("text/") else ctype,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/demo/scores", include_in_schema=False)
async def scores_page() -> Response:
    return _serve("demo/scores.html")


@router.get("/admin", include_in_schema=False)
async def admin_page() -> Response:
    return _serve("admin/index.html")


@router.get("/ui/{path:path}", include_in_schema=False)
async def asset(path: str) -> Response:
    return _serve(path)
