"""Herald's error tree: one root, one class per wire code family.

    HeraldError                      code, HTTP status, message, details
    ├── InvalidTopic                 invalid_topic (400)
    ├── InvalidFilter                invalid_filter (400)
    │   └── FilterCostExceeded       filter_cost_exceeded (400)
    ├── InvalidRequest               invalid_request (400)
    ├── PayloadTooLarge              payload_too_large (413)
    ├── Unauthorized                 unauthorized (401, WS close 4401)
    ├── Forbidden                    forbidden (403)
    ├── NotFound                     queue_not_found / subscription_not_found (404)
    ├── Conflict                     conflict (409)
    ├── ReceiptInvalid               receipt_invalid (400)
    ├── RateLimited                  rate_limited (429)
    ├── QueueFull                    queue_full (503)
    ├── BackplaneUnavailable         backplane_unavailable (503)
    ├── StoreUnavailable             store_unavailable (503)
    └── Overloaded                   overloaded (503)

Foreign errors (Redis, SQLite, pydantic) are translated into these at the boundary
that raised them, so nothing above `fanout/` ever sees a driver exception.
"""

from __future__ import annotations

from typing import Any


class HeraldError(Exception):
    """Root of every error Herald reports to a client.

    A subclass names its wire code and HTTP status as class keywords,
    `class Gone(HeraldError, code="gone", status=410)`; either may be left to the parent.
    """

    code: str = "internal"
    status: int = 500

    def __init_subclass__(
        cls, *, code: str | None = None, status: int | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The body of an HTTP error or the fields of a WebSocket `error` frame."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


class InvalidTopic(HeraldError, code="invalid_topic", status=400):
    """A topic name or pattern breaks the topic grammar."""


class InvalidFilter(HeraldError, code="invalid_filter", status=400):
    """A subscription filter does not parse or names what it may not."""


class FilterCostExceeded(InvalidFilter, code="filter_cost_exceeded"):
    """The filters of a connection, or of the process, would cost too much to run."""


class InvalidRequest(HeraldError, code="invalid_request", status=400):
    """A body, frame or parameter is malformed or out of range."""


class PayloadTooLarge(HeraldError, code="payload_too_large", status=413):
    """A payload, frame or body is over its size limit."""


class Unauthorized(HeraldError, code="unauthorized", status=401):
    """No credentials, or credentials that do not verify (WS close 4401)."""


class Forbidden(HeraldError, code="forbidden", status=403):
    """Valid credentials that do not allow this action."""


class NotFound(HeraldError, code="not_found", status=404):
    """The named resource does not exist."""


class QueueNotFound(NotFound, code="queue_not_found"):
    """The named queue does not exist."""


class Conflict(HeraldError, code="conflict", status=409):
    """The request contradicts the current state (e.g. a queue already exists)."""


class ReceiptInvalid(HeraldError, code="receipt_invalid", status=400):
    """A receipt handle is unknown, expired or already used."""


class RateLimited(HeraldError, code="rate_limited", status=429):
    """Too many requests or commands; retry later."""


class QueueFull(HeraldError, code="queue_full", status=503):
    """The queue holds its maximum number of messages."""


class BackplaneUnavailable(HeraldError, code="backplane_unavailable", status=503):
    """The backplane (Redis) cannot be reached."""


class StoreUnavailable(HeraldError, code="store_unavailable", status=503):
    """The durable queue store (SQLite or Redis) failed; the call did not take effect
    or may be retried (a send with a `dedup_id` is then not duplicated)."""


class Overloaded(HeraldError, code="overloaded", status=503):
    """The process sheds load; retry later."""
