"""Redis failures as Herald errors: the one place a driver exception is translated.

The backplane reports `BackplaneUnavailable` (code `backplane_unavailable`), the
queue store `StoreUnavailable` (code `store_unavailable`); both are HTTP 503, so
a client retries. Nothing above `fanout/` ever sees a redis-py exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.exceptions import RedisError

from shared.errors import BackplaneUnavailable, HeraldError

# What a Redis call raises when Redis is away, slow or refuses: redis-py wraps most
# socket errors, but a timeout or a reset can still surface as the builtin.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError)


def translate(exc: BaseException, error: type[HeraldError], what: str) -> HeraldError:
    """`exc` as a Herald `error` naming `what` failed; a HeraldError passes as is."""
    if isinstance(exc, HeraldError):
        return exc
    detail = str(exc) or type(exc).__name__
    return error(f"{what} failed: {detail}")


@contextlib.contextmanager
def translated(error: type[HeraldError], what: str) -> Iterator[None]:
    """Raise Redis failures inside the block as `error` (see `translate`)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise translate(exc, error, what) from None


def unavailable(exc: BaseException) -> HeraldError:
    """The error a client sees for a Redis failure of the backplane (HTTP 503)."""
    return translate(exc, BackplaneUnavailable, "the Redis backplane")
