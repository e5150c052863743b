"""Settings from `HERALD_*` environment variables (SPEC §6).

`herald serve` flags set the same fields, so a flag and its variable are one setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import InvalidTopic
from shared.topics import pattern_matches, validate_pattern


def _pattern(value: str) -> str:
    # pydantic reports ValueError as a validation error; InvalidTopic would escape it.
    try:
        return validate_pattern(value)
    except InvalidTopic as exc:
        raise ValueError(exc.message) from None


class HistoryRule(BaseModel):
    """Keep the last `size` messages and/or `ttl` seconds of topics matching `pattern`."""

    pattern: str
    size: int | None = Field(default=None, ge=1, le=1_000_000)
    ttl: float | None = Field(default=None, gt=0)

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, v: str) -> str:
        return _pattern(v)


class Settings(BaseSettings):
    """Every operator setting of a Herald process."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    engine: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Optional: pub/sub and topic history on their own Redis (e.g. a Cluster) while
    # queues stay on `redis_url` (docs/redis.md).
    backplane_url: str | None = None
    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Worker processes sharing the listening socket (redis engine only): one event
    # loop per core, and one fd limit per process.
    workers: int = Field(default=1, ge=1, le=64)

    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # HTTP publishes (messages) per second and burst per API key or JWT subject.
    # None: 1000/s, burst 2000, with auth on, and off in dev mode; 0 turns it off.
    http_publish_rate: float | None = Field(default=None, ge=0)
    http_publish_burst: int | None = Field(default=None, ge=1)

    ping_interval: float = Field(default=25.0, gt=0)
    ping_timeout: float = Field(default=20.0, gt=0)
    auth_timeout: float = Field(default=5.0, gt=0)
    # Seconds a client has to send a complete request head (upgrade or HTTP); a
    # socket that stays silent or half-sent is answered 408 and closed.
    handshake_timeout: float = Field(default=10.0, gt=0)
    send_buffer_bytes: int = Field(default=1 << 20, ge=1024)
    slow_consumer: Literal["drop", "disconnect"] = "drop"
    max_connections: int = Field(default=100_000, ge=1)
    max_message_bytes: int = Field(default=64 * 1024, ge=64)
    max_frame_bytes: int = Field(default=1 << 20, ge=1024)
    max_subscriptions_per_connection: int = Field(default=1000, ge=1)
    drain_timeout: float = Field(default=10.0, ge=0)
    # Sum of filter costs (value combinations, SNS-style) one connection may subscribe
    # with, and that the process's distinct filters may add up to.
    max_filter_cost_per_connection: int = Field(default=1500, ge=1)
    max_filter_cost: int = Field(default=50_000, ge=1)
    # WebSocket commands per second and burst per connection. None: 1000/s, burst 2000
    # with auth on (room for a queue worker acking one job at a time), off in dev mode
    # (no credentials configured); 0 turns it off.
    ws_command_rate: float | None = Field(default=None, ge=0)
    ws_command_burst: int | None = Field(default=None, ge=1)
    # Seconds before a JWT's `exp` that a connection is sent `token_expiring`.
    token_refresh_window: float = Field(default=30.0, ge=0)

    history: Annotated[list[HistoryRule], NoDecode] = Field(default_factory=list)
    min_batch_ms: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)

    log_level: str = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @field_validator("history", "min_batch_ms", mode="before")
    @classmethod
    def _json(cls, v: Any) -> Any:
        if isinstance(v, str):
            import orjson

            return orjson.loads(v) if v.strip() else None
        return v

    @field_validator("min_batch_ms")
    @classmethod
    def _valid_min_batch(cls, v: dict[str, int]) -> dict[str, int]:
        for pattern, ms in v.items():
            _pattern(pattern)
            if not 0 <= ms <= 60_000:
                raise ValueError(f"min_batch_ms for {pattern!r} must be 0..60000")
        return v

    @property
    def auth_enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_key or self.api_keys)

    def command_rate(self) -> tuple[float, int] | None:
        """(rate, burst) of the per-connection WebSocket command limit, or None (off)."""
        return self._limit(self.ws_command_rate, self.ws_command_burst)

    def _limit(self, rate: float | None, burst: int | None) -> tuple[float, int] | None:
        # A rate limit is on by default, except in dev mode; 0 turns it off.
        if rate is None:
            rate = 1000.0 if self.auth_enabled else 0.0
        if rate == 0:
            return None
        return rate, burst or max(1, int(rate * 2))

    def history_rule(self, topic: str) -> HistoryRule | None:
        """The first history rule whose pattern matches `topic` (SPEC §6)."""
        for rule in self.history:
            if pattern_matches(rule.pattern, topic):
                return rule
        return None

    def min_batch_for(self, pattern: str) -> int:
        """The operator's minimum `batch_ms` for a subscription pattern (0 when none).

        A rule applies when its pattern matches the subscription pattern taken as
        a topic; `*`/`>` segments of the subscription are compared literally, so
        `game.>` raises both `game.1.score` and `game.*.score`.
        """
        for rule, ms in self.min_batch_ms.items():
            if pattern_matches(rule, pattern.replace("*", "_").replace(">", "_")):
                return ms
        return 0

    def publish_rate(self) -> tuple[float, int] | None:
        """(rate, burst) of the HTTP publish limit per caller, or None (off)."""
        return self._limit(self.http_publish_rate, self.http_publish_burst)
