"""A JSON response rendered with orjson (FastAPI's ORJSONResponse is deprecated)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSONBytes(JSONResponse):
    """`JSONResponse` that encodes with orjson: faster, and bytes-native."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
