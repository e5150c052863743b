"""`herald queue …`: durable queues from the shell, over the HTTP API (docs/queues.md).

Every command prints the JSON answer on stdout; an error answer goes to stderr
and the exit code is 1.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer

from gateway.cliutil import fail_unreachable, parse_attrs

queue_app = typer.Typer(
    help="Durable queues (SQS semantics): create, send, receive, ack, stats, redrive.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

Url = Annotated[str, typer.Option("--url", envvar="HERALD_URL", help="Herald base URL.")]
ApiKey = Annotated[
    str | None, typer.Option("--token", envvar="HERALD_TOKEN", help="API key or JWT.")
]
DEFAULT_URL = "http://127.0.0.1:8080"


def _client(url: str, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # Long polls wait up to 20 s on the server; leave room for the answer.
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def _call(url: str, api_key: str | None, method: str, path: str, body: Any = None) -> Any:
    """Send one request, print its JSON answer, exit 1 on an error status."""
    try:
        with _client(url, api_key) as client:
            r = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        fail_unreachable(url, exc)
    text = r.text if r.content else "{}"
    if r.status_code >= 400:
        typer.echo(text, err=True)
        raise typer.Exit(1)
    data = json.loads(text)
    typer.echo(json.dumps(data, indent=2))
    return data


@queue_app.command()
def create(
    name: str,
    fifo: Annotated[bool, typer.Option("--fifo", help="FIFO queue (name must end .fifo)")] = False,
    visibility_timeout: Annotated[float | None, typer.Option(help="s (0-43200)")] = None,
    delay: Annotated[float | None, typer.Option(help="s (0-900)")] = None,
    retention: Annotated[float | None, typer.Option(help="s (60-1209600)")] = None,
    max_message_bytes: Annotated[int | None, typer.Option()] = None,
    dead_letter: Annotated[str | None, typer.Option(help="Dead-letter queue name")] = None,
    max_receive_count: Annotated[int, typer.Option(help="Receives before dead-lettering")] = 5,
    content_dedup: Annotated[bool, typer.Option("--content-dedup", help="FIFO only")] = False,
    max_depth: Annotated[int | None, typer.Option(help="Refuse sends at this depth")] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Create queue NAME, or update the attributes given."""
    body: dict[str, Any] = {
        k: v
        for k, v in {
            "visibility_timeout": visibility_timeout,
            "delay": delay,
            "retention": retention,
            "max_message_bytes": max_message_bytes,
            "max_depth": max_depth,
        }.items()
        if v is not None
    }
    if fifo:
        body["fifo"] = True
    if content_dedup:
        body["content_dedup"] = True
    if dead_letter:
        body["dead_letter"] = {"queue": dead_letter, "max_receive_count": max_receive_count}
    _call(url, api_key, "PUT", f"/v1/queues/{name}", body)


@queue_app.command()
def send(
    name: str,
    body_json: Annotated[str, typer.Argument(metavar="BODY_JSON", help="Message body (JSON)")],
    attr: Annotated[
        list[str] | None, typer.Option(help="Attribute k=v (string) or k:=v (JSON); repeatable")
    ] = None,
    delay: Annotated[float | None, typer.Option(help="s (0-900)")] = None,
    priority: Annotated[int | None, typer.Option(help="0-9, higher first")] = None,
    group_id: Annotated[str | None, typer.Option(help="FIFO message group")] = None,
    dedup_id: Annotated[str | None, typer.Option(help="Deduplication id (5 min)")] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Send one message with body BODY_JSON to queue NAME."""
    try:
        value = json.loads(body_json)
    except json.JSONDecodeError:
        raise typer.BadParameter(f"BODY_JSON is not JSON: {body_json!r}") from None
    body: dict[str, Any] = {"body": value}
    if attr:
        body["attributes"] = parse_attrs(attr)
    for key, v in (
        ("delay", delay),
        ("priority", priority),
        ("group_id", group_id),
        ("dedup_id", dedup_id),
    ):
        if v is not None:
            body[key] = v
    _call(url, api_key, "POST", f"/v1/queues/{name}/messages", body)


@queue_app.command()
def receive(
    name: str,
    max_messages: Annotated[int, typer.Option("--max", help="1-100 messages")] = 1,
    wait: Annotated[float, typer.Option(help="Long poll, s (0-20)")] = 0,
    visibility_timeout: Annotated[float | None, typer.Option(help="s")] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Receive (claim) messages from queue NAME; ack them with their receipts."""
    body: dict[str, Any] = {"max": max_messages, "wait": wait}
    if visibility_timeout is not None:
        body["visibility_timeout"] = visibility_timeout
    _call(url, api_key, "POST", f"/v1/queues/{name}/receive", body)


@queue_app.command()
def ack(
    name: str,
    receipts: Annotated[list[str], typer.Argument(metavar="RECEIPT...")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Delete received messages by RECEIPT."""
    data = _call(url, api_key, "POST", f"/v1/queues/{name}/ack", {"receipts": receipts})
    if any("error" in r for r in data.get("results", ())):
        raise typer.Exit(1)


@queue_app.command()
def stats(
    name: Annotated[str | None, typer.Argument(help="Queue (default: all queues)")] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Attributes and stats of one queue, or of every queue."""
    _call(url, api_key, "GET", f"/v1/queues/{name}" if name else "/v1/queues")


@queue_app.command()
def redrive(
    dlq: Annotated[str, typer.Argument(metavar="DLQ")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Move dead-lettered messages of DLQ back to their source queues."""
    _call(url, api_key, "POST", f"/v1/queues/{dlq}/redrive")
