"""The `herald` command: serve, publish, tail, queue, demo, apply."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import sys
from pathlib import Path
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
    since: Annotated[
        int | None, typer.Option(help="Start after this offset (a topic with history)")
    ] = None,
    epoch: Annotated[str | None, typer.Option(help="The epoch of --since")] = None,
    url: Url = "http://127.0.0.1:8080",
    token: Token = None,
) -> None:
    """Print messages matching PATTERN, one JSON per line; survive server restarts."""
    import httpx

    # Reconnecting is for a server that goes away later; a URL with nothing behind it
    # at start is a mistake to report in one line, not to retry forever.
    try:
        httpx.get(f"{url}/healthz", timeout=5)
    except httpx.HTTPError as exc:
        fail_unreachable(url, exc)
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


@app.command()
def demo(
    games: Annotated[int, typer.Option(min=1, max=1000, help="Games to simulate")] = 6,
    rate: Annotated[float, typer.Option(min=0.1, max=1000, help="Updates per second")] = 4.0,
    duration: Annotated[float, typer.Option(min=0, help="Seconds to run (0: forever)")] = 0,
    seed: Annotated[int | None, typer.Option(help="Random seed (a repeatable run)")] = None,
    url: Url = "http://127.0.0.1:8080",
    token: Token = None,
) -> None:
    """Simulate live games (goals, cards, clock ticks) for the /demo/scores page."""
    from gateway.demo import run

    typer.echo(f"{games} games, {rate:g} updates/s: open {url}/demo/scores", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        sent = run(url, games, rate, duration, token, seed, echo=lambda s: typer.echo(s, err=True))
        typer.echo(f"published {sent} updates", err=True)


@app.command("apply")
def apply_resources(
    file: Annotated[Path, typer.Option("-f", "--file", help="resources YAML file")],
    dry_run: Annotated[bool, typer.Option(help="Print the changes, make none")] = False,
    prune: Annotated[bool, typer.Option(help="Also delete what the file does not declare")] = False,
    url: Url = "http://127.0.0.1:8080",
    token: Token = None,
) -> None:
    """Create or update queues and subscriptions to match FILE (idempotent)."""
    import httpx
    import yaml  # type: ignore[import-untyped]

    from gateway.apply import HttpTarget, apply, load
    from shared.errors import HeraldError

    try:
        resources = load(file)
    except (OSError, yaml.YAMLError, HeraldError) as exc:
        fail(f"{file}: {exc}")

    async def run() -> list[Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            return await apply(HttpTarget(client), resources, prune=prune, dry_run=dry_run)

    try:
        steps = asyncio.run(run())
    except httpx.TransportError as exc:
        fail_unreachable(url, exc)
    except HeraldError as exc:
        fail(f"herald apply: {exc}")
    for step in steps:
        typer.echo(step.line())
    verb = "would change" if dry_run else "changed"
    typer.echo(f"{verb} {len(steps)} resource(s)" if steps else "no changes")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
