"""Resources as code: `herald apply -f resources.yaml` and `HERALD_RESOURCES`.

A resources file declares queues (attributes, dead-letter queues), topic→queue and
webhook subscriptions, and history rules. `plan` compares it with what exists and
returns the steps; the same plan runs against a live gateway over HTTP (the CLI)
or against the queue service at start-up. Applying twice changes nothing; `prune`
also removes queues and subscriptions the file does not declare (never the
internal `_webhook-*` queues, which belong to their subscriptions).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import yaml  # type: ignore[import-untyped]

from fanout.queues.webhook_policy import parse_policy, secret_hash
from shared.config import HistoryRule
from shared.errors import HeraldError, InvalidRequest

INTERNAL_PREFIX = "_webhook-"
HISTORY_SYNC_S = 1.0
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP = {"queues", "subscriptions", "history"}


@dataclass(slots=True)
class Resources:
    """A parsed resources file."""

    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    history: list[HistoryRule] | None = None  # None: the file does not declare them


@dataclass(frozen=True, slots=True)
class Step:
    """One change: `op` is create, update or delete; `kind` is queue or subscription."""

    op: str
    kind: str
    name: str
    body: dict[str, Any] | None = None
    note: str = ""

    def line(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-"}[self.op]
        return f"{sign} {self.kind} {self.name}" + (f": {self.note}" if self.note else "")


def _env_value(m: re.Match[str]) -> str:
    # An unset variable would become an empty (null) field far from its cause.
    value = os.environ.get(m.group(1))
    if value is None:
        raise InvalidRequest(f"${{{m.group(1)}}} is used but the variable is not set")
    return value


def load(path: Path) -> Resources:
    """Read a resources file; `${VAR}` is replaced by the environment variable."""
    text = "".join(
        line if line.lstrip().startswith("#") else _ENV.sub(_env_value, line)
        for line in Path(path).read_text().splitlines(keepends=True)
    )
    data = yaml.safe_load(text) or {}
    if not isinstance(data, Mapping) or set(data) - _TOP:
        raise InvalidRequest(f"a resources file holds only: {', '.join(sorted(_TOP))}")
    res = Resources()
    for q in data.get("queues") or []:
        if not isinstance(q, Mapping) or not isinstance(q.get("name"), str):
            raise InvalidRequest("each queue needs a 'name'")
        res.queues[q["name"]] = {k: v for k, v in q.items() if k != "name"}
    for s in data.get("subscriptions") or []:
        if not isinstance(s, Mapping) or ("queue" in s) == ("endpoint" in s):
            raise InvalidRequest("each subscription needs a 'topic' and one of queue/endpoint")
        res.subscriptions.append(dict(s))
    if "history" in data:
        res.history = [HistoryRule(**h) for h in data.get("history") or []]
    return res


def _identity(sub: Mapping[str, Any]) -> tuple[str, str, bytes]:
    target = sub.get("endpoint") or sub.get("queue") or ""
    flt = orjson.dumps(sub.get("filter_policy"), option=orjson.OPT_SORT_KEYS)
    return str(sub.get("topic")), target, flt


def _webhook_drift(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    drift = []
    if parse_policy(want.get("delivery_policy")).as_dict() != have.get("delivery_policy"):
        drift.append("delivery_policy")
    if bool(want.get("raw", False)) != bool(have.get("raw")):
        drift.append("raw")
    if want.get("dead_letter") != have.get("dead_letter"):
        drift.append("dead_letter")
    if want.get("secret") and secret_hash(want["secret"]) != have.get("secret_hash"):
        drift.append("secret")
    return drift


def plan(
    res: Resources,
    queues: Mapping[str, Mapping[str, Any]],
    subs: Sequence[Mapping[str, Any]],
    *,
    prune: bool,
    history: Sequence[Mapping[str, Any]] | None = None,
) -> list[Step]:
    """The steps that make `queues`, `subs` and `history` (current state) match `res`."""
    steps: list[Step] = []
    if res.history is not None:
        want_rules = [r.model_dump() for r in res.history]
        if want_rules != list(history or []):
            steps.append(Step("update", "history", "rules", {"rules": want_rules}))
    # Dead-letter targets first: a queue's DLQ must exist before the queue names it.
    dlqs = {(a.get("dead_letter") or {}).get("queue") for a in res.queues.values()}
    for name in sorted(res.queues, key=lambda n: (n not in dlqs, n)):
        want = res.queues[name]
        have = queues.get(name)
        if have is None:
            steps.append(Step("create", "queue", name, dict(want)))
            continue
        changed = [k for k, v in want.items() if have.get(k) != v]
        if changed:
            steps.append(Step("update", "queue", name, dict(want), ", ".join(sorted(changed))))
    current = {_identity(s): s for s in subs}
    declared = set()
    for want in res.subscriptions:
        key = _identity(want)
        declared.add(key)
        label = f"{want['topic']} -> {key[1]}"
        have_sub = current.get(key)
        if have_sub is None:
            steps.append(Step("create", "subscription", label, dict(want)))
        elif "endpoint" in want and (drift := _webhook_drift(want, have_sub)):
            steps.append(Step("update", "subscription", label, dict(want), ", ".join(drift)))
    if prune:
        for key, have_sub in current.items():
            if key not in declared:
                label = f"{have_sub['topic']} -> {key[1]}"
                steps.append(Step("delete", "subscription", label, {"id": have_sub["id"]}))
        for name in sorted(queues):
            if name not in res.queues and not name.startswith(INTERNAL_PREFIX):
                steps.append(Step("delete", "queue", name))
    return steps


# Current queues by name, subscriptions, declared history rules.
State = tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


class Target(Protocol):
    """Where a plan runs: a gateway over HTTP, or the queue service in-process."""

    async def state(self) -> State: ...

    async def run(self, step: Step) -> None: ...


class ServiceTarget:
    """The queue service of this process (HERALD_RESOURCES at start-up)."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc

    async def state(self) -> State:
        names = list(await self.svc.stats())
        queues = {n: await self.svc.get(n) for n in names}
        return queues, await self.svc.list_subscriptions(), await self.svc.history_rules()

    async def run(self, step: Step) -> None:
        body = step.body or {}
        if step.kind == "history":
            await self.svc.set_history_rules(body["rules"])
        elif step.kind == "queue":
            if step.op == "delete":
                await self.svc.delete(step.name)
            else:
                await self.svc.create_or_update(step.name, body)
        elif step.op == "delete":
            await self.svc.delete_subscription(body["id"])
        elif "endpoint" in body:
            await self.svc.create_webhook_subscription(
                body["topic"],
                body["endpoint"],
                body.get("filter_policy"),
                delivery_policy=body.get("delivery_policy"),
                raw=body.get("raw", False),
                secret=body.get("secret"),
                dead_letter=body.get("dead_letter"),
                confirm=body.get("confirm", False),
            )
        else:
            await self.svc.create_subscription(
                body["topic"], body["queue"], body.get("filter_policy")
            )


async def apply(target: Target, res: Resources, *, prune: bool, dry_run: bool) -> list[Step]:
    """Plan against the target's current state and, unless `dry_run`, run the steps."""
    queues, subs, history = await target.state()
    steps = plan(res, queues, subs, prune=prune, history=history)
    if not dry_run:
        for step in steps:
            await target.run(step)
    return steps


async def apply_file(svc: Any, path: Path) -> list[Step]:
    """Apply a resources file to this process's queue service (start-up)."""
    return await apply(ServiceTarget(svc), load(path), prune=False, dry_run=False)


async def follow_history_rules(svc: Any, settings: Any, env_rules: list[HistoryRule]) -> None:
    """Keep `settings.history` = declared rules (from the store) + `HERALD_HISTORY` rules.

    Declared rules come first, so a rule applied at runtime wins over the environment's.
    Runs until cancelled; a store that is away keeps the last rules.
    """
    while True:
        with contextlib.suppress(HeraldError):
            declared = [HistoryRule(**r) for r in await svc.history_rules()]
            settings.history = declared + env_rules
        await asyncio.sleep(HISTORY_SYNC_S)


class HttpTarget:
    """A running gateway's HTTP API (`herald apply --url`)."""

    def __init__(self, client: Any) -> None:
        self.client = client  # an httpx.AsyncClient with base_url and auth headers

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = await self.client.request(method, path, json=body)
        if r.status_code >= 400:
            raise InvalidRequest(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    async def state(self) -> State:
        queues = {q["name"]: q for q in (await self._call("GET", "/v1/queues"))["queues"]}
        subs = (await self._call("GET", "/v1/subscriptions"))["subscriptions"]
        rules = (await self._call("GET", "/v1/history-rules"))["rules"]
        return queues, subs, rules

    async def run(self, step: Step) -> None:
        body = step.body or {}
        if step.kind == "history":
            await self._call("PUT", "/v1/history-rules", body)
        elif step.kind == "queue":
            if step.op == "delete":
                await self._call("DELETE", f"/v1/queues/{step.name}")
            else:
                await self._call("PUT", f"/v1/queues/{step.name}", body)
        elif step.op == "delete":
            await self._call("DELETE", f"/v1/subscriptions/{body['id']}")
        else:
            await self._call("POST", "/v1/subscriptions", body)
