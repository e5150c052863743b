"""FastAPI dependencies shared by the HTTP routers: the node and the caller.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in its thread
pool, which cost about a quarter of a publish's CPU (measured, docs/BENCHMARKS.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from shared.auth import Principal, bearer
from shared.errors import Forbidden

if TYPE_CHECKING:
    from fanout.node import Node


async def get_node(request: Request) -> Node:
    """The process's engine, created in the app's lifespan."""
    node: Node = request.app.state.node
    return node


async def get_principal(request: Request) -> Principal:
    """The authenticated caller (401 `unauthorized` when credentials are bad)."""
    node: Node = request.app.state.node
    return node.auth.authenticate(bearer(request.headers.get("authorization")))


async def require_admin(request: Request) -> Principal:
    """Callers allowed to manage queues and subscriptions: API keys, admin JWTs."""
    return admin_principal(request.app.state.node, request.headers.get("authorization"))


def admin_principal(node: Node, authorization: str | None) -> Principal:
    """`require_admin` for a raw `Authorization` header (the fast path's too)."""
    principal = node.auth.authenticate(bearer(authorization))
    if not principal.admin:
        raise Forbidden("this call needs an API key or an admin token")
    return principal
