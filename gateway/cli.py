"""The `herald` command: serve, publish, tail, queue, bench."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cliutil import parse_attrs

app = typer.Typer(
    help="Herald: real-time WebSocket pub/sub gateway with durable queues.",
    no_args_is_help=True,
    add_completion=False,
)

try:
    from gateway.queue_cli import queue_app
except ImportError:  # pragma: no cover - queues not built into this tree
    pass
else:
    app.add_typer(queue_app, name="queue", help="Durable queues (SQS semantics).")

Url = Annotated[str, typer.Option(envvar="HERALD_URL", help="Herald base URL.")]
Token = Annotated[str | None, typer.Option(envvar="HERALD_TOKEN", help="API key or JWT.")]


@app.command()
def serve(
    engine: Annotated[str | None, typer.Option(help="memory (embedded) or redis")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis or Redis Cluster URL")] = None,
    backplane_url: Annotated[
        str | None, typer.Option(help="Redis (Cluster) for pub/sub and history only")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Embedded store directory")] = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (redis engine)")] = None,
    jwt_secret: Annotated[str | None, typer.Option(help="HS256 secret")] = None,
    jwt_public_key: Annotated[str | None, typer.Option(help="RS256 public key (PEM)")] = None,
    api_keys: Annotated[str | None, typer.Option(help="Comma-separated API keys")] = None,
    ping_interval: Annotated[float | None, typer.Option()] = None,
    send_buffer_bytes: Annotated[int | None, typer.Option()] = None,
    slow_consumer: Annotated[str | None, typer.Option(help="drop or disconnect")] = None,
    max_connections: Annotated[int | None, typer.Option()] = None,
    history: Annotated[str | None, typer.Option(help="JSON list of history rules")] = None,
    min_batch_ms: Annotated[str | None, typer.Option(help="JSON map pattern -> ms")] = None,
    drain_timeout: Annotated[float | None, typer.Option()] = None,
    log_level: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Run the gateway (flags override the matching HERALD_* variables)."""
    from gateway.server import run

    overrides: dict[str, Any] = {k: v for k, v in locals().items() if v is not None and k != "run"}
    run(overrides)


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
    r = httpx.post(f"{url}/v1/publish", json=body, headers=headers, timeout=10)
    typer.echo(r.text)
    raise typer.Exit(0 if r.status_code < 400 else 1)


@app.command()
def tail(
    pattern: str,
    filter: Annotated[str | None, typer.Option(help="SNS filter policy (JSON)")] = None,
    batch_ms: Annotated[int, typer.Option()] = 0,
    count: Annotated[int, typer.Option(help="Exit after this many messages (0: never)")] = 0,
    since: Annotated[
        int | None, typer.Option(help="Start after this offset (a topic with history)")
    ] = None,
    epoch: Annotated[str | None, typer.Option(help="The epoch of --since")] = None,
    url: Url = "http://127.0.0.1:8080",
    token: Token = None,
) -> None:
    """Print messages matching PATTERN, one JSON per line; survive server restarts."""
    ws_url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws"
    flt = json.loads(filter) if filter else None
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(_tail(ws_url, pattern, flt, batch_ms, count, since, epoch, token))
        raise typer.Exit(code)


async def _tail(
    ws_url: str,
    pattern: str,
    flt: dict[str, Any] | None,
    batch_ms: int,
    count: int,
    since: int | None,
    epoch: str | None,
    token: str | None,
) -> int:
    from herald_client import HeraldClient, HeraldClientError

    def on_event(name: str, info: dict[str, Any]) -> None:
        if name == "recovered" and info.get("recovered") is False:
            typer.echo("# resume could not recover: messages may be missing", err=True)

    def on_drop(info: dict[str, Any]) -> None:
        typer.echo(
            f"# disconnected ({info.get('code')}): {info.get('reason')}; reconnecting", err=True
        )

    async with HeraldClient(ws_url, token=token, max_backoff=5.0) as client:
        client.on("disconnected", on_drop)
        seen = 0
        try:
            sub = await client.subscribe(
                pattern, filter=flt, batch_ms=batch_ms, since=since, epoch=epoch, on_event=on_event
            )
            async for msg in sub:
                typer.echo(json.dumps(msg))
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    return 0
        except HeraldClientError as exc:
            typer.echo(json.dumps({"op": "error", "message": str(exc)}), err=True)
            return 1
    return 0


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
