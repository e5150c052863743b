"""Auth claims, settings parsing and the in-memory topic history."""

from __future__ import annotations

import time

import jwt
import pytest

from fanout.history import MemoryHistory
from fanout.message import Message
from shared.auth import Authenticator, bearer
from shared.config import HistoryRule, Settings
from shared.errors import Forbidden, Unauthorized

SECRET = "a-test-secret-that-is-32-bytes-long!!"


def token(**claims: object) -> str:
    base: dict[str, object] = {"sub": "u1", "exp": int(time.time()) + 60}
    base.update(claims)
    return jwt.encode(base, SECRET, algorithm="HS256")


def test_open_mode_allows_everything() -> None:
    p = Authenticator().authenticate(None)
    assert p.can_subscribe("any.>") and p.can_publish("x")


def test_jwt_claims_limit_patterns() -> None:
    auth = Authenticator(jwt_secret=SECRET)
    p = auth.authenticate(token(subscribe=["game.>"], publish=["game.*.score"]))
    assert p.sub == "u1"
    assert p.can_subscribe("game.*.score") and p.can_subscribe("game.1")
    assert not p.can_subscribe("chat.1") and not p.can_subscribe(">")
    p.check_publish("game.1.score")
    with pytest.raises(Forbidden):
        p.check_publish("game.1.other")


@pytest.mark.parametrize(
    "cred",
    [
        None,
        "",
        "garbage",
        jwt.encode({"sub": "u", "exp": 1}, SECRET, algorithm="HS256"),
        jwt.encode(
            {"sub": "u", "exp": int(time.time()) + 60},
            "another-secret-of-32-bytes-or-more!!",
            algorithm="HS256",
        ),
        jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
    ],
)
def test_bad_credentials_are_unauthorized(cred: str | None) -> None:
    with pytest.raises(Unauthorized):
        Authenticator(jwt_secret=SECRET).authenticate(cred)


@pytest.mark.parametrize(
    "claims",
    [
        {"admin": "false"},
        {"admin": "true"},
        {"admin": 1},
        {"admin": None},
        {"sub": ""},
        {"sub": "x" * 257},
        # Far in the future: parameters are built at collection, long before a late run.
        {"exp": "4102444800"},
        {"subscribe": "game.>"},
        {"subscribe": [1]},
        {"publish": ["bad..pattern"]},
        {"publish": {"a": 1}},
    ],
)
def test_claims_of_the_wrong_type_are_unauthorized(claims: dict[str, object]) -> None:
    """No claim is coerced: bool("false") would grant admin."""
    with pytest.raises(Unauthorized, match="claim"):
        Authenticator(jwt_secret=SECRET).authenticate(token(**claims))


def test_only_json_true_grants_admin() -> None:
    auth = Authenticator(jwt_secret=SECRET)
    assert auth.authenticate(token(admin=True)).admin
    assert not auth.authenticate(token(admin=False)).admin
    assert not auth.authenticate(token()).admin


def test_api_keys() -> None:
    auth = Authenticator(api_keys=["k1", "k2"])
    assert auth.authenticate("k2").admin
    with pytest.raises(Unauthorized):
        auth.authenticate("k3")


def test_bearer_header() -> None:
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer(None) is None


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_API_KEYS", "a, b,")
    monkeypatch.setenv("HERALD_HISTORY", '[{"pattern": "game.>", "size": 10}]')
    monkeypatch.setenv("HERALD_MIN_BATCH_MS", '{"game.>": 100}')
    s = Settings()
    assert s.api_keys == ["a", "b"] and s.auth_enabled
    rule = s.history_rule("game.1")
    assert rule is not None and rule.size == 10
    assert s.history_rule("chat.1") is None
    assert s.min_batch_for("game.*.score") == 100 and s.min_batch_for("chat.>") == 0


def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_HISTORY", '[{"pattern": "bad..p", "size": 10}]')
    with pytest.raises(ValueError):
        Settings()


def m(topic: str, i: int, ts: int = 0) -> Message:
    return Message.build(topic, str(i), ts, i, None)


def test_history_offsets_size_and_resume_coverage() -> None:
    h = MemoryHistory()
    rule = HistoryRule(pattern="t", size=3)
    for i in range(1, 6):
        assert h.append(m("t", i), rule, 0).offset == i
    page = h.read("t", rule, 2, 100, 0)
    assert [x.offset for x in page.messages] == [3, 4, 5] and page.complete
    assert not h.read("t", rule, 1, 100, 0).complete  # offset 2 was trimmed
    assert h.read("t", rule, 5, 100, 0).complete  # up to date
    assert not h.read("t", rule, 9, 100, 0).complete  # ahead of the topic
    assert b'"offset":5' in page.messages[-1].envelope


def test_history_ttl_trims_old_messages() -> None:
    h = MemoryHistory()
    rule = HistoryRule(pattern="t", ttl=1.0)
    h.append(m("t", 1, ts=0), rule, 0)
    h.append(m("t", 2, ts=1500), rule, 1500)
    page = h.read("t", rule, 0, 100, 1600)
    assert [x.offset for x in page.messages] == [2] and not page.complete
