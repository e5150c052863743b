"""`GET /client/herald.js`: the JavaScript client (clients/js/herald.js), so a page can
`import { HeraldClient } from "/client/herald.js"` with no build step."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from fastapi import APIRouter, Response

from shared.errors import HeraldError

router = APIRouter()


class ClientNotFound(HeraldError):
    status = 404
    code = "not_found"


def _candidates() -> list[Path]:
    # A source checkout has it next to gateway/; the image copies it to /app/clients/js.
    paths = [Path(__file__).resolve().parent.parent / "clients" / "js" / "herald.js"]
    paths.append(Path.cwd() / "clients" / "js" / "herald.js")
    if env := os.environ.get("HERALD_CLIENT_JS"):
        paths.insert(0, Path(env))
    return paths


@functools.cache
def _source() -> bytes | None:
    for path in _candidates():
        if path.is_file():
            return path.read_bytes()
    return None


@router.get("/client/herald.js", include_in_schema=False)
async def herald_js() -> Response:
    body = _source()
    if body is None:
        raise ClientNotFound("herald.js is not installed with this server")
    return Response(
        body,
        media_type="text/javascript; charset=utf-8",
        # A page on another origin may import it as a module (which needs CORS).
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )
