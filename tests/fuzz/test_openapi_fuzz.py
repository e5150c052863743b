"""Schemathesis over `/openapi.json` of a real `herald serve`: no input gets a 5xx."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from procs import HeraldServer, herald_fixture

pytestmark = pytest.mark.integration


server = herald_fixture(clean_log=True)


@pytest.fixture(scope="module")
def api_schema(server: HeraldServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.http}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def deep(n: int, leaf: Any = 1) -> Any:
    for _ in range(n):
        leaf = [leaf]
    return leaf


# Values a schema never generates but a hostile client sends (issue 9): lone
# surrogate escapes (requests writes "\ud800"), keys made of them, and nesting near
# orjson's limit of 255 levels.
HOSTILE: list[Any] = [
    "\ud800", "a\udfffb", {"\ud800": ["x"]}, deep(252), deep(254), deep(70, {"k": "\udc00"}),
    2**64, -(2**63) - 1,
]  # fmt: skip


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON body a value could be swapped (depth-bounded)."""
    out = [path] if path else []
    if len(path) < 4:
        items = (
            value.items()
            if isinstance(value, dict)
            else enumerate(value)
            if isinstance(value, list)
            else ()
        )
        for key, item in list(items)[:20]:
            out += _paths(item, (*path, key))
    return out


def _replace(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return body


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """Half the bodies get one value somewhere replaced by a hostile one."""
    paths = _paths(body) if isinstance(body, dict | list) else []
    if not paths:
        return st.just(body)
    hostile = st.tuples(st.sampled_from(paths), st.sampled_from(HOSTILE)).map(
        lambda pv: _replace(body, *pv)
    )
    return st.one_of(st.just(body), hostile)


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_input_gets_a_5xx(case: schemathesis.Case) -> None:
    response = case.call(timeout=30)
    assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
