"""Exceptions raised by the Herald client.

HeraldClientError
├── CommandError        the server answered a command with an `error` frame
├── ConnectionLost      a command was in flight when the connection dropped and
│                       is not safe to resend (a publish without `id`)
├── OfflineQueueFull    disconnected and the bounded command queue is full
└── ClientClosed        the client was closed, or gave up (1008, 4401 twice)
"""

from __future__ import annotations

from typing import Any


class HeraldClientError(Exception):
    """Root of every error this package raises."""


class CommandError(HeraldClientError):
    """An `error` reply: `code` is Herald's error code (`forbidden`, `invalid_topic`...)."""

    def __init__(self, code: str, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reply = reply or {}


class ConnectionLost(HeraldClientError):
    """The connection dropped before the reply; the command may or may not have run."""


class OfflineQueueFull(HeraldClientError):
    """Disconnected, and `max_offline_commands` commands are already waiting."""


class ClientClosed(HeraldClientError):
    """The client is closed; `code`/`reason` say why when the server ended it."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
