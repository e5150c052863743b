"""The OpenAPI document: Herald's real error model, statuses and security schemes.

FastAPI documents a 422 `HTTPValidationError` for every route with a body or a
parameter, while Herald answers 400 `{"error": {...}}` (see `install_error_handlers`).
Routes declare the statuses they can answer with `errors(...)`; `install_openapi`
removes FastAPI's 422 and declares the API key and JWT bearer schemes.
docs/http-api.md is generated from this document (scripts/gen_http_api.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """What went wrong: a stable `code` for programs, a `message` for people."""

    code: str = Field(examples=["invalid_topic"], description="see docs/protocol.md, Errors")
    message: str = Field(examples=["topic segment 2 is empty"])
    details: Any = Field(default=None, description="optional, e.g. validation errors")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer of the HTTP API."""

    error: ErrorBody


# Why each status happens; a route lists the ones it can answer.
_REASONS = {
    400: "invalid_request, invalid_topic, invalid_filter or receipt_invalid",
    401: "unauthorized: missing or invalid API key or JWT",
    403: "forbidden: the token's claims do not allow this",
    404: "queue_not_found or subscription_not_found",
    409: "conflict",
    413: "payload_too_large: the body or a message is over its limit",
    429: "rate_limited (with Retry-After)",
    503: "backplane_unavailable, store_unavailable or queue_full (with Retry-After)",
}

AUTH = (401, 403)
"""Statuses of every authenticated route."""


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer these error statuses."""
    return {
        status: {"model": ErrorResponse, "description": _REASONS[status]}
        for status in sorted(statuses)
    }


SECURITY_SCHEMES = {
    "ApiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "One of HERALD_API_KEYS, as `Authorization: Bearer <key>`. "
        "An API key may do everything (admin).",
    },
    "BearerJWT": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "HS256 (HERALD_JWT_SECRET) or RS256 (HERALD_JWT_PUBLIC_KEY) token "
        "with `sub`, `exp`, and `publish` / `subscribe` pattern lists; `admin: true` for "
        "queue and subscription calls.",
    },
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with Herald's corrections (see the module docstring)."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    doc["components"]["securitySchemes"] = SECURITY_SCHEMES
    for item in doc["paths"].values():
        for operation in item.values():
            operation["responses"].pop("422", None)
            if "401" in operation["responses"]:
                # Either scheme works on every authenticated route; with auth off (dev
                # mode) none is needed.
                operation["security"] = [{"ApiKey": []}, {"BearerJWT": []}]
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve `build_openapi(app)` at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
