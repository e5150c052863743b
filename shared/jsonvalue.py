"""What Herald accepts as a JSON value, checked once at every edge (HTTP and WebSocket).

A value that parses is not always one Herald can store and deliver again:

- a lone surrogate escape (`"\\ud800"`) parses in Python but cannot be encoded as
  UTF-8, so every later encode of it fails;
- `NaN`, `Infinity` and `1e999` (a float that overflows) are not JSON at all, and
  orjson would silently write them as `null`;
- integers beyond 64 bits cannot be encoded by orjson;
- deep nesting: orjson refuses to encode past 255 levels, and a stored value is
  wrapped in a few more levels every time it is delivered (`{"messages":[{"body":…}]}`),
  so a queue body accepted at depth 253 could never be received again.

`check_value` refuses all of these with `InvalidRequest` (400) before anything is
accepted; `parse_http_body` is the HTTP body parser that applies it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from shared.errors import InvalidRequest

# Deep enough for any real document, far below orjson's 255 with room for the
# envelopes a value is later wrapped in.
MAX_DEPTH = 64
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1


def _bad_string(s: str) -> bool:
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_value(value: Any, field: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise `InvalidRequest` unless `value` is JSON that Herald can encode and deliver.

    `field` names the value in the error message (never the offending text, which
    may itself be unencodable). Depth counts nested containers: `[[1]]` is 2 deep.
    """
    if type(value) is str and value.isascii():  # the common case, without the walk
        return
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        v, depth = pop()
        t = type(v)
        if t is str:
            if _bad_string(v):
                raise InvalidRequest(
                    f"'{field}' holds a lone surrogate escape (not valid Unicode)",
                    details={"field": field},
                )
        elif t is dict or t is list:
            if depth >= max_depth:
                raise InvalidRequest(
                    f"'{field}' is nested more than {max_depth} levels deep",
                    details={"field": field, "max_depth": max_depth},
                )
            items: Iterable[Any]
            if t is dict:
                for k in v:
                    if type(k) is not str or _bad_string(k):
                        raise InvalidRequest(
                            f"'{field}' has an object key that is not valid Unicode",
                            details={"field": field},
                        )
                items = v.values()
            else:
                items = v
            for item in items:
                push((item, depth + 1))
        elif t is float:
            if not math.isfinite(v):
                raise InvalidRequest(
                    f"'{field}' holds NaN or an infinite number, which JSON cannot carry",
                    details={"field": field},
                )
        elif t is int:
            if not MIN_INT <= v <= MAX_INT:
                raise InvalidRequest(
                    f"'{field}' holds an integer outside the 64-bit range",
                    details={"field": field},
                )
        elif v is not None and t is not bool:
            raise InvalidRequest(f"'{field}' is not a JSON value", details={"field": field})


def check_fields(obj: Mapping[str, Any]) -> None:
    """`check_value` on each field of a command or entry, each named by its key."""
    for key, value in obj.items():
        if type(key) is not str or _bad_string(key):
            raise InvalidRequest("a field name is not valid Unicode")
        check_value(value, key)


def json_safe(value: Any) -> Any:
    """A copy of `value` any encoder accepts, for error replies that echo input:
    unencodable characters become `?` and other values their `repr`."""
    t = type(value)
    if t is str:
        return value.encode("utf-8", "replace").decode("utf-8") if _bad_string(value) else value
    if t is dict:
        return {json_safe(str(k)): json_safe(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [json_safe(v) for v in value]
    if t is float and not math.isfinite(value):
        return repr(value)
    if value is None or t in (bool, int, float):
        return value
    return json_safe(repr(value))


def parse_http_body(raw: bytes, batch_keys: tuple[str, ...] = ()) -> Any:
    """Parse and check an HTTP JSON body.

    Raises `json.JSONDecodeError` for malformed JSON (the framework reports it) and
    `InvalidRequest` for JSON Herald refuses. The items of a top-level list under one
    of `batch_keys` are left to the per-entry check (`check_value` in the publish
    and send paths), so that one bad entry gets its own error, not the whole batch.
    """
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        raise
    except RecursionError:  # the C parser's own guard, some 1,000 levels down
        raise InvalidRequest(
            f"the body is nested more than {MAX_DEPTH} levels deep",
            details={"max_depth": MAX_DEPTH},
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InvalidRequest(f"the body is not acceptable JSON: {exc}") from None
    if isinstance(body, dict):
        # Batch entries are checked one by one later; every other field now.
        check_fields(
            {k: v for k, v in body.items() if not (k in batch_keys and isinstance(v, list))}
        )
    else:
        check_value(body, "body")
    return body
