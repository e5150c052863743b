"""Which browser origins may use Herald: the WebSocket `Origin` check.

HERALD_ALLOWED_ORIGINS drives both this check and the HTTP API's CORS headers
(Starlette's CORSMiddleware, see gateway/app.py). Browsers attach cookies and other
ambient credentials to a cross-site WebSocket upgrade and CORS does not apply to
WebSockets, so without this check any page could open a socket as the visitor
(cross-site WebSocket hijacking).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit


def origin_allowed(headers: Mapping[str, str], allowed: Iterable[str]) -> bool:
    """Whether an upgrade with these (lower-cased) headers may proceed.

    No `Origin` header: not a browser (CLIs, servers, mobile apps), allowed. A page
    served by this very host (same origin) is always allowed. Otherwise the origin
    must be listed, or the list must hold `*`.
    """
    origin = headers.get("origin")
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    listed = {o.lower() for o in allowed}
    if "*" in listed or origin in listed:
        return True
    host = headers.get("host", "").lower()
    return bool(host) and urlsplit(origin).netloc == host
