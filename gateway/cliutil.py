"""Helpers shared by the `herald` CLI commands."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer


def parse_attrs(pairs: list[str] | None) -> dict[str, Any]:
    """`k=v` gives a string; `k:=v` parses v as JSON (number or boolean), as httpie does."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        k, sep, v = pair.partition("=")
        if not sep or not k or k == ":":
            raise typer.BadParameter(f"attribute {pair!r} is not k=v or k:=v")
        if k.endswith(":"):
            try:
                value = json.loads(v)
            except json.JSONDecodeError:
                raise typer.BadParameter(f"attribute {pair!r}: {v!r} is not JSON") from None
            if not isinstance(value, int | float | bool):
                raise typer.BadParameter(f"attribute {pair!r} must be a number or boolean")
            out[k[:-1]] = value
        else:
            out[k] = v
    return out


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit: what went wrong and what it names."""
    typer.echo(f"herald: {message}", err=True)
    raise typer.Exit(code)


def fail_unreachable(url: str, exc: BaseException) -> NoReturn:
    """A request to `url` failed before any answer: say so in one line."""
    reason = str(exc) or type(exc).__name__
    fail(f"cannot reach {url} ({reason}); is `herald serve` running there? (--url / HERALD_URL)")
