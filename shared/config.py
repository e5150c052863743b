"""Settings from `HERALD_*` environment variables (README.md, Configuration).

`herald serve` flags set the same fields, so a flag and its variable are one setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import InvalidTopic
from shared.topics import pattern_matches, validate_pattern


def _pattern(value: str) -> str:
    # pydantic reports ValueError as a validation error; InvalidTopic would escape it.
    try:
        return validate_pattern(value)
    except InvalidTopic as exc:
        raise ValueError(exc.message) from None


def redact(url: str) -> str:
    """`url` without its password, for log lines and errors."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


class HistoryRule(BaseModel):
    """Keep the last `size` messages and/or `ttl` seconds of topics matching `pattern`."""

    pattern: str
    size: int | None = Field(default=None, ge=1, le=1_000_000)
    ttl: float | None = Field(default=None, gt=0)

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, v: str) -> str:
        return _pattern(v)


class AwsCredential(BaseModel):
    """One AWS access key of the SQS/SNS API: its secret and the names it may use.

    `queues` and `topics` are shell-style globs (`orders-*`); `["*"]` is everything.
    """

    secret: str = Field(min_length=1)
    queues: list[str] = Field(default_factory=lambda: ["*"])
    topics: list[str] = Field(default_factory=lambda: ["*"])


class Settings(BaseSettings):
    """Every operator setting of a Herald process."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    # Each `description` is the `herald serve --help` text of the setting's flag.
    engine: Literal["memory", "redis"] = Field(
        default="memory", description="memory (embedded, one process) or redis"
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis or Redis Cluster URL (redis engine)"
    )
    # Optional: pub/sub and topic history on their own Redis (e.g. a Cluster) while
    # queues stay on `redis_url` (docs/redis.md).
    backplane_url: str | None = Field(
        default=None, description="separate Redis (Cluster) for pub/sub and history only"
    )
    data_dir: Path = Field(
        default=Path("./data"), description="embedded queue store directory (memory engine)"
    )
    host: str = Field(default="127.0.0.1", description="listen address")
    port: int = Field(default=8080, ge=0, le=65535, description="listen port")
    # Worker processes sharing the listening socket (redis engine only): one event
    # loop per core, and one fd limit per process.
    workers: int = Field(
        default=1, ge=1, le=64, description="worker processes sharing the port (redis engine)"
    )

    jwt_secret: str | None = Field(default=None, description="HS256 secret; turns auth on")
    jwt_public_key: str | None = Field(
        default=None, description="RS256 public key (PEM); turns auth on"
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated API keys; turns auth on"
    )
    # Browsers: CORS on the HTTP API and the Origin check of the WebSocket upgrade.
    allowed_origins: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="comma-separated origins allowed from browsers, or *; "
        "default * without auth (dev mode), same-origin only with auth",
    )
    # HTTP publishes (messages) per second and burst per API key or JWT subject.
    # None: 1000/s, burst 2000, with auth on, and off in dev mode; 0 turns it off.
    http_publish_rate: float | None = Field(
        default=None, ge=0, description="HTTP publishes/s per API key or JWT subject; 0 off"
    )
    http_publish_burst: int | None = Field(
        default=None, ge=1, description="burst of the HTTP publish rate limit"
    )

    ping_interval: float = Field(
        default=25.0, gt=0, description="s of silence before a WebSocket ping"
    )
    ping_timeout: float = Field(
        default=20.0, gt=0, description="s to wait for any frame after a ping"
    )
    auth_timeout: float = Field(default=5.0, gt=0, description="s allowed for a first-frame auth")
    # Seconds a client has to send a complete request head (upgrade or HTTP); a
    # socket that stays silent or half-sent is answered 408 and closed.
    handshake_timeout: float = Field(
        default=10.0, gt=0, description="s to send a complete request head (then 408)"
    )
    send_buffer_bytes: int = Field(
        default=1 << 20, ge=1024, description="per-socket outbound buffer bound"
    )
    slow_consumer: Literal["drop", "disconnect"] = Field(
        default="drop", description="drop (then a lagged frame) or disconnect (close 1013)"
    )
    max_connections: int = Field(
        default=100_000, ge=1, description="WebSocket connections per process"
    )
    max_message_bytes: int = Field(
        default=64 * 1024, ge=64, description="largest encoded topic message"
    )
    max_frame_bytes: int = Field(
        default=1 << 20, ge=1024, description="largest client frame (close 1009)"
    )
    max_subscriptions_per_connection: int = Field(
        default=1000, ge=1, description="subscriptions one socket may hold"
    )
    drain_timeout: float = Field(default=10.0, ge=0, description="s allowed to drain on SIGTERM")
    # Sum of filter costs (value combinations, SNS-style) one connection may subscribe
    # with, and that the process's distinct filters may add up to.
    max_filter_cost_per_connection: int = Field(
        default=1500, ge=1, description="filter cost one connection may subscribe with"
    )
    max_filter_cost: int = Field(
        default=50_000, ge=1, description="filter cost of the process's distinct filters"
    )
    # WebSocket commands per second and burst per connection. None: 1000/s, burst 2000
    # with auth on (room for a queue worker acking one job at a time), off in dev mode
    # (no credentials configured); 0 turns it off.
    ws_command_rate: float | None = Field(
        default=None, ge=0, description="WebSocket commands/s per connection; 0 off"
    )
    ws_command_burst: int | None = Field(
        default=None, ge=1, description="burst of the WebSocket command rate limit"
    )
    # Seconds before a JWT's `exp` that a connection is sent `token_expiring`.
    token_refresh_window: float = Field(
        default=30.0, ge=0, description="s before a JWT's exp that token_expiring is sent"
    )

    history: Annotated[list[HistoryRule], NoDecode] = Field(
        default_factory=list,
        description='JSON list of history rules, e.g. [{"pattern":"game.>","size":100}]',
    )
    min_batch_ms: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description='JSON map pattern -> minimum batch_ms, e.g. {"game.>":100}',
    )

    # The SQS/SNS API (docs/aws.md): access key id -> secret and allowed names.
    aws_credentials: Annotated[dict[str, AwsCredential], NoDecode] = Field(
        default_factory=dict,
        description='JSON: AWS access key -> {"secret", "queues", "topics"} for SQS/SNS',
    )
    aws_region: str = Field(default="us-east-1", description="region in SQS/SNS URLs and ARNs")
    aws_account_id: str = Field(
        default="000000000000",
        pattern=r"^[0-9]{12}$",
        description="account id in SQS/SNS URLs and ARNs",
    )

    webhook_timeout: float = Field(
        default=15.0, gt=0, le=300, description="s bound on one webhook HTTP attempt"
    )
    resources: Path | None = Field(
        default=None, description="resources file applied at start-up (docs/webhooks.md)"
    )

    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="critical, error, warning, info or debug"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [o.strip().rstrip("/") for o in v.split(",") if o.strip()]
        return v

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @field_validator("history", "min_batch_ms", "aws_credentials", mode="before")
    @classmethod
    def _json(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, str):
            import orjson

            if not v.strip():  # an empty variable means "none", not a validation error
                return [] if info.field_name == "history" else {}
            try:
                return orjson.loads(v)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
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
    def origins(self) -> list[str]:
        """Origins browsers may call from: the setting, else `*` in dev mode (no auth)."""
        if self.allowed_origins is not None:
            return self.allowed_origins
        return [] if self.auth_enabled else ["*"]

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
        """The first history rule whose pattern matches `topic` (docs/protocol.md)."""
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
