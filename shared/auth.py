"""Authentication: JWT (HS256 secret or RS256 public key) and API keys
(docs/protocol.md, Authentication; docs/http-api.md).

A `Principal` says who is calling and which patterns it may subscribe to and
publish on. With no secret, key or API key configured, Herald runs open (dev mode)
and every caller is the all-powerful anonymous principal.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from typing import Any

import jwt

from shared.errors import Forbidden, InvalidTopic, Unauthorized
from shared.topics import pattern_covers, validate_pattern

_ALL = (">",)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and what its claims allow."""

    sub: str
    subscribe: tuple[str, ...] = _ALL
    publish: tuple[str, ...] = _ALL
    admin: bool = False
    # The token's `exp` (unix seconds); None for API keys and dev mode, which never expire.
    exp: int | None = None

    def can_subscribe(self, pattern: str) -> bool:
        return any(pattern_covers(a, pattern) for a in self.subscribe)

    def can_publish(self, topic: str) -> bool:
        if self.publish == _ALL:  # API keys, dev mode: skip the pattern walk per publish
            return True
        return any(pattern_covers(a, topic) for a in self.publish)

    def check_subscribe(self, pattern: str) -> None:
        if not self.can_subscribe(pattern):
            raise Forbidden(f"not allowed to subscribe to {pattern!r}")

    def check_publish(self, topic: str) -> None:
        if not self.can_publish(topic):
            raise Forbidden(f"not allowed to publish to {topic!r}")


ANONYMOUS = Principal(sub="anonymous", admin=True)


class Authenticator:
    """Turns a bearer credential into a `Principal`, or raises `Unauthorized`."""

    def __init__(
        self,
        *,
        jwt_secret: str | None = None,
        jwt_public_key: str | None = None,
        api_keys: list[str] | None = None,
    ) -> None:
        self._secret = jwt_secret
        self._public_key = jwt_public_key
        self._api_keys = [k.encode() for k in (api_keys or [])]
        self.enabled = bool(jwt_secret or jwt_public_key or self._api_keys)

    def authenticate(self, credential: str | None) -> Principal:
        """Validate an API key or a JWT; open mode accepts anything."""
        if not self.enabled:
            return ANONYMOUS
        if not credential:
            raise Unauthorized("missing credentials")
        raw = credential.encode()
        # Constant-time compare so a key cannot be guessed byte by byte.
        matches = [hmac.compare_digest(raw, k) for k in self._api_keys]  # no early exit
        if any(matches):
            # One subject per key, so that per-caller limits apply per key.
            return Principal(sub=f"api-key-{matches.index(True) + 1}", admin=True)
        if not (self._secret or self._public_key):
            raise Unauthorized("invalid API key")
        return self._decode_jwt(credential)

    def _decode_jwt(self, token: str) -> Principal:
        key: str
        algorithms: list[str]
        if self._public_key:
            key, algorithms = self._public_key, ["RS256"]
        else:
            assert self._secret is not None
            key, algorithms = self._secret, ["HS256"]
        try:
            claims = jwt.decode(
                token, key, algorithms=algorithms, options={"require": ["sub", "exp"]}
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return principal_from_claims(claims)


MAX_SUB_CHARS = 256


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Check every claim Herald reads by its JSON type, and build the `Principal`.

    A claim of the wrong type is refused (`Unauthorized`, WS close 4401) rather than
    coerced: `bool("false")` is True, so only the JSON boolean `true` grants admin.
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUB_CHARS:
        raise Unauthorized(f"claim 'sub' must be a string of 1-{MAX_SUB_CHARS} characters")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise Unauthorized("claim 'exp' must be a number (Unix seconds)")
    admin = claims.get("admin", False)
    if not isinstance(admin, bool):
        raise Unauthorized("claim 'admin' must be true or false")
    return Principal(
        sub=sub,
        subscribe=_patterns(claims.get("subscribe"), "subscribe"),
        publish=_patterns(claims.get("publish"), "publish"),
        admin=admin,
        exp=int(exp),
    )


def _patterns(value: object, claim: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Unauthorized(f"claim '{claim}' must be a list of patterns")
    try:
        return tuple(validate_pattern(p) for p in value)
    except InvalidTopic as exc:
        raise Unauthorized(f"claim '{claim}': {exc.message}") from None


def bearer(header: str | None) -> str | None:
    """The credential of an `Authorization: Bearer …` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
