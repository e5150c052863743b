"""The `herald` command: serve, publish, tail, queue, bench."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import sys
from typing import Annotated, Any

import typer

from gateway.cliutil import fail, fail_unreachable, parse_attrs
from gateway.queue_cli import queue_app
from shared.config import Settings

app = typer.Typer(
    help="Herald: real-time WebSocket pub/sub gateway with durable queues.",
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: typer's rich help shows flags as `--help <bool>`.
    rich_markup_mode=None,
)

app.add_typer(queue_app, name="queue", help="Durable queues (SQS semantics).")

Url = Annotated[str, typer.Option(envvar="HERALD_URL", help="Herald base URL.")]
Token = Annotated[str | None, typer.Option(envvar="HERALD_TOKEN", help="API key or JWT.")]


def _serve(**flags: str | None) -> None:
    """Run the gateway. Each flag overrides its HERALD_* variable."""
    from gateway.server import StartupError, run

    # Raw strings go to pydantic, so a flag and its variable are validated the same
    # way and a bad value is reported in one line naming both.
    try:
        run({k: v for k, v in flags.items() if v is not None})
    except StartupError as exc:
        fail(str(exc))


def _serve_flags() -> list[inspect.Parameter]:
    """One `--flag` per Settings field: adding a setting adds its flag."""
    params = []
    for name, field in Settings.model_fields.items():
        env = f"HERALD_{name.upper()}"
        default = field.get_default(call_default_factory=True)
        shown = "none" if default in (None, [], {}) else str(default)
        option = typer.Option(
            help=f"{field.description or name.replace('_', ' ')} (default: {shown}; env: {env})",
            metavar=name.split("_")[-1].upper(),
            show_default=False,
        )
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[str | None, option],
            )
        )
    return params


_serve.__signature__ = inspect.Signature(_serve_flags())  # type: ignore[attr-defined]
_serve.__annotations__ = {p.name: p.annotation for p in _serve.__signature__.parameters.values()}  # type: ignore[attr-defined]
app.command("serve")(_serve)


@app.command()
def publish(
    topic: str,
    data: Annotated[str, typer.Argument(help="JSON data (plain text is sent as a string)")],
    attr: Annotated[
        list[str] | None,
        typer.Option(help="Attribute k=v (string) or k:=v (JSON number/bool); repeatable"),
    ] = None,
    msg_id: Annotated[str | None, typer.Option("--id", help="Idempotency key")] = None,
    url: Url = "http://127.0.0.1:8080",
    token: Token = None,
) -> None:
    """Publish one message over HTTP."""
    import httpx

    try:
        value: Any = json.loads(data)
    except json.JSONDecodeError:
        value = data
    body: dict[str, Any] = {"topic": topic, "data": value, "attributes": parse_attrs(attr)}
    if msg_id:
        body["id"] = msg_id
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.post(f"{url}/v1/publish", json=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        fail_unreachable(url, exc)
    if r.status_code >= 400:
        typer.echo(r.text, err=True)
        raise typer.Exit(1)
    typer.echo(r.text)


@app.command()
def tail(
    pattern: str,
    filter: Annotated[str | None, typer.Option(help="SNS filter policy (JSON)")] = None,
    batch_ms: Annotated[int, typer.Option()] = 0,
    count: Annotated[int, typer.Option(help="Exit after this many messages (0: never)")] = 0,
    url: Url = "http://127.0.0.1:8080",
    token: Token = None,
) -> None:
    """Print messages matching PATTERN as they arrive, one JSON per line."""
    import websockets

    ws_url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws"
    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(_tail(ws_url, pattern, filter, batch_ms, count, token))
        except (OSError, websockets.InvalidHandshake) as exc:
            fail_unreachable(url, exc)


async def _tail(
    ws_url: str, pattern: str, flt: str | None, batch_ms: int, count: int, token: str | None
) -> None:
    import websockets

    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with websockets.connect(ws_url, additional_headers=headers, compression=None) as ws:
        cmd: dict[str, Any] = {"op": "subscribe", "id": 1, "topic": pattern, "batch_ms": batch_ms}
        if flt:
            cmd["filter"] = json.loads(flt)
        await ws.send(json.dumps(cmd))
        seen = 0
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("op") == "error":
                typer.echo(json.dumps(frame), err=True)
                raise typer.Exit(1)
            for msg in frame.get("msgs", ()):
                typer.echo(json.dumps(msg))
                seen += 1
                if count and seen >= count:
                    return
            sys.stdout.flush()


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(help="Smaller, faster run")] = False,
) -> None:
    """Run the fanout benchmarks in loadtest/ (see docs/BENCHMARKS.md)."""
    import importlib

    # loadtest/ ships in the repo, not in the wheel's runtime path: import lazily.
    runner = importlib.import_module("loadtest.bench")
    raise typer.Exit(int(runner.main(quick=quick)))


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
