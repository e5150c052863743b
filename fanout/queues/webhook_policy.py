"""Webhook delivery policy: SNS's HTTP/S retry phases and throttle, as pure functions.

A policy has the fields and defaults of an SNS HTTP/S delivery policy
(`healthyRetryPolicy` flattened, plus `throttlePolicy.maxReceivesPerSecond`).
Retries run in four phases: `numNoDelayRetries` at once, `numMinDelayRetries`
`minDelayTarget` apart, the backoff phase from `minDelayTarget` to
`maxDelayTarget` shaped by `backoffFunction`, and `numMaxDelayRetries`
`maxDelayTarget` apart. Nothing here reads a clock: callers pass `now`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from fanout.queues.model import is_fifo_name, validate_name
from shared.errors import InvalidRequest

BACKOFF_FUNCTIONS = ("linear", "arithmetic", "geometric", "exponential")
# SNS's hard limits: 100 retries, 3600 s between two attempts.
MAX_RETRIES = 100
MAX_DELAY_S = 3600.0

_FIELDS = {
    "numRetries",
    "numNoDelayRetries",
    "numMinDelayRetries",
    "numMaxDelayRetries",
    "minDelayTarget",
    "maxDelayTarget",
    "backoffFunction",
    "maxReceivesPerSecond",
}


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """One subscription's retry and throttle settings (SNS names, SNS defaults).

    Delays are seconds; unlike SNS, fractions and 0 are allowed (tests, local
    endpoints). `maxReceivesPerSecond` None means no throttling.
    """

    numRetries: int = 3  # SNS field names are the wire names
    numNoDelayRetries: int = 0
    numMinDelayRetries: int = 0
    numMaxDelayRetries: int = 0
    minDelayTarget: float = 20.0
    maxDelayTarget: float = 20.0
    backoffFunction: str = "linear"
    maxReceivesPerSecond: float | None = None

    @property
    def max_attempts(self) -> int:
        """The first attempt plus every retry."""
        return 1 + self.numRetries

    @property
    def backoff_retries(self) -> int:
        return (
            self.numRetries
            - self.numNoDelayRetries
            - self.numMinDelayRetries
            - self.numMaxDelayRetries
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def retry_delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based), by phase."""
        if not 1 <= retry <= self.numRetries:
            raise ValueError(f"retry {retry} is outside 1..{self.numRetries}")
        lo, hi = self.minDelayTarget, self.maxDelayTarget
        if retry <= self.numNoDelayRetries:
            return 0.0
        retry -= self.numNoDelayRetries
        if retry <= self.numMinDelayRetries:
            return lo
        retry -= self.numMinDelayRetries
        n = self.backoff_retries
        if retry > n:
            return hi
        return backoff(self.backoffFunction, retry, n, lo, hi)

    def schedule(self) -> list[float]:
        """The delay before each retry, in order (for docs and tests)."""
        return [self.retry_delay(i) for i in range(1, self.numRetries + 1)]


def backoff(function: str, i: int, n: int, lo: float, hi: float) -> float:
    """Delay of backoff retry `i` of `n`: rises from near `lo` to exactly `hi`.

    - linear: equal steps;
    - arithmetic: steps that grow by a constant (i(i+1)/2, a triangular curve);
    - geometric: a constant ratio between delays (lo * (hi/lo)^(i/n));
    - exponential: steps that double (2^i - 1), flat early and steep late.
    """
    if n <= 0 or hi <= lo:
        return hi
    span = hi - lo
    if function == "linear":
        frac = i / n
    elif function == "arithmetic":
        frac = (i * (i + 1)) / (n * (n + 1))
    elif function == "geometric":
        if lo > 0:
            return round(lo * math.pow(hi / lo, i / n), 6)
        frac = i / n  # a ratio from 0 is undefined; fall back to equal steps
    elif function == "exponential":
        frac = (2**i - 1) / (2**n - 1)
    else:
        raise ValueError(f"unknown backoff function {function!r}")
    return round(lo + span * frac, 6)


def parse_policy(raw: Mapping[str, Any] | None) -> DeliveryPolicy:
    """Validate a delivery policy (flat, or SNS's nested `healthyRetryPolicy` form)."""
    if raw is None:
        return DeliveryPolicy()
    if not isinstance(raw, Mapping):
        raise InvalidRequest("'delivery_policy' must be an object")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("healthyRetryPolicy", "throttlePolicy") and isinstance(value, Mapping):
            flat.update(value)
        else:
            flat[key] = value
    unknown = set(flat) - _FIELDS
    if unknown:
        raise InvalidRequest(f"unknown delivery policy fields: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key in ("numRetries", "numNoDelayRetries", "numMinDelayRetries", "numMaxDelayRetries"):
        if key in flat:
            values[key] = _int(flat[key], key, 0, MAX_RETRIES)
    for key in ("minDelayTarget", "maxDelayTarget"):
        if key in flat:
            values[key] = _num(flat[key], key, 0, MAX_DELAY_S)
    if "backoffFunction" in flat:
        fn = flat["backoffFunction"]
        if not isinstance(fn, str) or fn.lower() not in BACKOFF_FUNCTIONS:
            raise InvalidRequest(f"'backoffFunction' must be one of {', '.join(BACKOFF_FUNCTIONS)}")
        values["backoffFunction"] = fn.lower()
    if flat.get("maxReceivesPerSecond") is not None:
        values["maxReceivesPerSecond"] = _num(flat["maxReceivesPerSecond"], "mrps", 0.01, 10_000)
    policy = DeliveryPolicy(**values)
    if policy.minDelayTarget > policy.maxDelayTarget:
        raise InvalidRequest("'minDelayTarget' must not exceed 'maxDelayTarget'")
    if policy.backoff_retries < 0:
        raise InvalidRequest(
            "'numRetries' must cover numNoDelayRetries + numMinDelayRetries + numMaxDelayRetries"
        )
    return policy


def _int(value: object, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidRequest(f"'{field}' must be an integer from {lo} to {hi}")
    return value


def _num(value: object, field: str, lo: float, hi: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not lo <= float(value) <= hi or math.isnan(float(value)):  # type: ignore[arg-type]
        name = "maxReceivesPerSecond" if field == "mrps" else field
        raise InvalidRequest(f"'{name}' must be a number from {lo:g} to {hi:g}")
    return float(value)  # type: ignore[arg-type]


class Throttle:
    """`maxReceivesPerSecond` as evenly spaced slots: at most `rate` starts per second.

    `reserve(now)` books the next slot and returns how long to wait for it; a
    caller that waits that long never exceeds the rate over any window.
    """

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next = -math.inf

    def reserve(self, now: float) -> float:
        if self.rate is None:
            return 0.0
        slot = max(now, self._next)
        self._next = slot + 1.0 / self.rate
        return slot - now


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do after one delivery attempt."""

    action: str  # "ack" | "retry" | "fail"
    delay: float = 0.0  # for "retry": seconds until the next attempt
    error: str = ""


def classify(status: int | None, error: str, attempt: int, policy: DeliveryPolicy) -> Outcome:
    """Decide after attempt number `attempt` (1-based) got `status` (None: no answer).

    2xx succeeds; 429, 5xx and network errors are retried while the policy has
    retries left; any other answer (3xx, 4xx) fails at once, since repeating the
    same request cannot change a client error.
    """
    if status is not None and 200 <= status < 300:
        return Outcome("ack")
    retryable = status is None or status == 429 or status >= 500
    why = error or f"HTTP {status}"
    if not retryable:
        return Outcome("fail", error=why)
    if attempt > policy.numRetries:
        return Outcome("fail", error=why)
    return Outcome("retry", policy.retry_delay(attempt), why)


def webhook_settings(
    endpoint: object,
    delivery_policy: Mapping[str, Any] | None,
    raw: object,
    secret: object,
    dead_letter: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Validate a webhook subscription's settings into their stored form."""
    if not isinstance(endpoint, str) or len(endpoint) > 2048:
        raise InvalidRequest("'endpoint' must be an http:// or https:// URL")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("'endpoint' must be an http:// or https:// URL")
    if not isinstance(raw, bool):
        raise InvalidRequest("'raw' must be a boolean")
    if secret is None:
        secret = secrets.token_urlsafe(32)
    if not isinstance(secret, str) or not 1 <= len(secret) <= 256:
        raise InvalidRequest("'secret' must be a string of 1 to 256 characters")
    dlq: dict[str, Any] | None = None
    if dead_letter is not None:
        if not isinstance(dead_letter, Mapping) or set(dead_letter) != {"queue"}:
            raise InvalidRequest("'dead_letter' must be {\"queue\": name}")
        dlq = {"queue": validate_name(dead_letter["queue"])}
        if is_fifo_name(dlq["queue"]):  # a webhook has no group id to send it with
            raise InvalidRequest("a webhook's dead-letter queue must be a standard queue")
    return {
        "endpoint": endpoint,
        "delivery_policy": parse_policy(delivery_policy).as_dict(),
        "raw": raw,
        "secret": secret,
        "dead_letter": dlq,
    }


def secret_hash(secret: str) -> str:
    """A short digest of a webhook secret: lets `herald apply` see a change, not the key."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]
