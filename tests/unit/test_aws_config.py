"""HERALD_AWS_CREDENTIALS and the JSON settings: parsed, validated, empty means none."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.config import Settings


def test_aws_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HERALD_AWS_CREDENTIALS", '{"AKID": {"secret": "s", "queues": ["orders-*"]}}'
    )
    cred = Settings().aws_credentials["AKID"]
    assert cred.secret == "s" and cred.queues == ["orders-*"] and cred.topics == ["*"]


@pytest.mark.parametrize(
    "name", ["HERALD_AWS_CREDENTIALS", "HERALD_HISTORY", "HERALD_MIN_BATCH_MS"]
)
def test_an_empty_json_variable_means_none(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "  ")
    settings = Settings()
    assert not settings.aws_credentials and not settings.history and not settings.min_batch_ms


@pytest.mark.parametrize(
    "value", ['{"AKID": {"secret": ""}}', '{"AKID": {}}', '{"AKID": "s"}', "[1]"]
)
def test_bad_aws_credentials_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HERALD_AWS_CREDENTIALS", value)
    with pytest.raises(ValidationError):
        Settings()


def test_account_id_is_twelve_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_AWS_ACCOUNT_ID", "123")
    with pytest.raises(ValidationError):
        Settings()
