"""Run uvicorn with Herald's WebSocket protocol and the FastAPI app.

Start-up problems (a bad setting, Redis down, the port taken) end the process with
one line naming the setting, URL or port: `StartupError`, printed by the CLI.
"""

from __future__ import annotations

import errno
import logging
import logging.config
import os
import socket
from typing import Any

import uvicorn
from pydantic import ValidationError

from gateway.app import create_asgi_app
from gateway.httpproto import HeraldHttp
from gateway.wsproto import HeraldWebSocket
from shared.config import Settings, redact

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StartupError(Exception):
    """The gateway cannot start; the message is one line for the operator."""


def log_config(level: str) -> dict[str, Any]:
    """One format for Herald's and uvicorn's loggers (uvicorn applies it per worker)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"herald": {"format": LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "herald",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # uvicorn's loggers lose their own handlers and format, and propagate to root.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    return dict(
        host=settings.host,
        port=settings.port,
        ws=HeraldWebSocket,
        loop="uvloop",
        # httptools plus a request-head deadline and a cap on all open sockets.
        http=HeraldHttp,
        lifespan="on",
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
        # Herald's own keep-alive wheel pings WebSockets; uvicorn's settings only
        # apply to its built-in protocols.
    )


def build_config(settings: Settings) -> uvicorn.Config:
    """uvicorn settings: Herald's `http=` and `ws=` classes, uvloop, bounded drain."""
    return uvicorn.Config(create_asgi_app(settings), **_uvicorn_options(settings))


def load_settings(overrides: dict[str, Any]) -> Settings:
    """Settings from HERALD_* variables and flags; a bad value is one `StartupError` line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "settings"
        where = "".join(f"[{p}]" for p in err["loc"][1:])
        source = f"--{name.replace('_', '-')}" if name in overrides else f"HERALD_{name.upper()}"
        raise StartupError(
            f"invalid setting {source}{where}: {err['msg']} (got {err.get('input')!r})"
        ) from None


def check_redis(settings: Settings) -> None:
    """Fail fast, in one line, when the redis engine's Redis does not answer."""
    import redis

    urls = {"--redis-url / HERALD_REDIS_URL": settings.redis_url}
    if settings.backplane_url:
        urls["--backplane-url / HERALD_BACKPLANE_URL"] = settings.backplane_url
    for flag, url in urls.items():
        # Any one node answers PING, so a Cluster URL is checked as a plain one.
        plain = url.replace("+cluster://", "://", 1)
        client = redis.Redis.from_url(plain, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        except (redis.RedisError, OSError, ValueError) as exc:
            raise StartupError(f"cannot reach Redis at {redact(url)} ({flag}): {exc}") from None
        finally:
            client.close()


def check_data_dir(settings: Settings) -> None:
    """Fail fast, in one line, when the memory engine cannot write its queue store."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".herald-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"cannot write the data directory {path} ({exc.strerror or exc}); "
            "choose another with --data-dir / HERALD_DATA_DIR"
        ) from None


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind (not yet listen) the gateway's socket, so a taken port fails before start-up."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use: stop the process holding it "
                "(`ss -ltnp`) or choose another with --port / HERALD_PORT"
            ) from None
        raise StartupError(
            f"cannot listen on {host}:{port} ({exc.strerror}); check --host / HERALD_HOST"
        ) from None
    sock.set_inheritable(True)
    return sock


def run(overrides: dict[str, Any]) -> None:
    """Start a gateway process (blocks until it is stopped); raises `StartupError`."""
    settings = load_settings(overrides)
    logging.config.dictConfig(log_config(settings.log_level))
    if settings.workers > 1 and settings.engine != "redis":
        # Workers share nothing but the listening socket: only the Redis backplane
        # lets a publish on one worker reach subscribers on another.
        raise StartupError("--workers / HERALD_WORKERS > 1 needs HERALD_ENGINE=redis")
    if settings.engine == "redis":
        check_redis(settings)
    else:
        check_data_dir(settings)
    sock = bind_socket(settings.host, settings.port)
    if settings.port == 0:
        settings = settings.model_copy(update={"port": sock.getsockname()[1]})
    if settings.workers == 1:
        uvicorn.Server(build_config(settings)).run(sockets=[sock])
        return
    sock.close()  # uvicorn's supervisor binds its own shared socket for the workers
    # Each worker is a fresh process that builds its own app from HERALD_* variables.
    for name, value in overrides.items():
        os.environ[f"HERALD_{name.upper()}"] = str(value)
    uvicorn.run(
        "gateway.app:create_asgi_app",
        factory=True,
        workers=settings.workers,
        **_uvicorn_options(settings),
    )
