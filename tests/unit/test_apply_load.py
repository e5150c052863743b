"""Reading a resources file: `${VAR}` substitution (gateway/apply.py)."""

from pathlib import Path

import pytest

from gateway.apply import load
from shared.errors import InvalidRequest

FILE = """# ${NOT_READ} in a comment is left alone
subscriptions:
  - topic: orders.>
    endpoint: ${HOOK_URL}
"""


def test_variables_are_substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_URL", "https://example.test/hook")
    monkeypatch.delenv("NOT_READ", raising=False)
    (tmp_path / "r.yaml").write_text(FILE)
    res = load(tmp_path / "r.yaml")
    assert res.subscriptions == [{"topic": "orders.>", "endpoint": "https://example.test/hook"}]


def test_an_unset_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # It used to become an empty (null) endpoint and a confusing API error later.
    monkeypatch.delenv("HOOK_URL", raising=False)
    (tmp_path / "r.yaml").write_text(FILE)
    with pytest.raises(InvalidRequest, match=r"\$\{HOOK_URL\}"):
        load(tmp_path / "r.yaml")
