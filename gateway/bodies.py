"""HTTP request bodies: parsed and checked by Herald's JSON rules before FastAPI sees them.

FastAPI parses JSON with the standard library, which accepts `NaN`, `Infinity`, `1e999`
and lone surrogate escapes; every one of those later failed as a 500. This route class
parses the body itself (`shared.jsonvalue.parse_http_body`), so a bad value is a 400
`invalid_request`, and a body over the size limit is a 413, not FastAPI's generic 400.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from shared.jsonvalue import parse_http_body

# Batch routes: their entries are checked one by one, so one bad entry gets its
# own error instead of failing the batch.
BATCH_KEYS = ("entries", "messages")


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI parses a body without a content type as JSON too
    media = content_type.partition(";")[0].strip().lower()
    return media.startswith("application/") and (
        media == "application/json" or media.endswith("+json")
    )


class StrictJSONRoute(APIRoute):
    """An `APIRoute` whose JSON body follows `shared.jsonvalue` (see the module doc)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        batch_keys = BATCH_KEYS if self.path.endswith("/batch") else ()

        async def strict(request: Request) -> Response:
            raw = await request.body()  # PayloadTooLarge here is a 413, not a 400
            if raw and _is_json(request.headers.get("content-type")):
                # A malformed body is left to FastAPI, which reports it as it always has.
                with contextlib.suppress(json.JSONDecodeError):
                    # Starlette's Request caches the parsed body in `_json`.
                    request._json = parse_http_body(raw, batch_keys)
            return await handler(request)

        return strict
