"""The SNS delivery policy as pure math: phases, backoff curves, throttle, outcomes."""

from __future__ import annotations

import pytest

from fanout.queues.webhook_policy import DeliveryPolicy, Throttle, classify, parse_policy
from shared.errors import InvalidRequest


def test_sns_defaults() -> None:
    p = parse_policy(None)
    assert p.as_dict() == {
        "numRetries": 3,
        "numNoDelayRetries": 0,
        "numMinDelayRetries": 0,
        "numMaxDelayRetries": 0,
        "minDelayTarget": 20.0,
        "maxDelayTarget": 20.0,
        "backoffFunction": "linear",
        "maxReceivesPerSecond": None,
    }
    assert p.schedule() == [20.0, 20.0, 20.0]


def test_phases_in_order() -> None:
    p = parse_policy(
        {
            "numRetries": 8,
            "numNoDelayRetries": 2,
            "numMinDelayRetries": 1,
            "numMaxDelayRetries": 2,
            "minDelayTarget": 1,
            "maxDelayTarget": 10,
            "backoffFunction": "linear",
        }
    )
    assert p.schedule() == [0, 0, 1, 4, 7, 10, 10, 10]


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        ("linear", [3.25, 5.5, 7.75, 10.0]),
        ("arithmetic", [1.9, 3.7, 6.4, 10.0]),
        ("geometric", [1.778279, 3.162278, 5.623413, 10.0]),
        ("exponential", [1.6, 2.8, 5.2, 10.0]),
    ],
)
def test_backoff_functions(fn: str, expected: list[float]) -> None:
    p = DeliveryPolicy(numRetries=4, minDelayTarget=1, maxDelayTarget=10, backoffFunction=fn)
    assert p.schedule() == pytest.approx(expected)
    assert p.schedule() == sorted(p.schedule())  # never shrinks


def test_nested_sns_form_and_validation() -> None:
    p = parse_policy(
        {
            "healthyRetryPolicy": {
                "numRetries": 5,
                "backoffFunction": "EXPONENTIAL",
                "minDelayTarget": 1,
                "maxDelayTarget": 60,
            },
            "throttlePolicy": {"maxReceivesPerSecond": 5},
        }
    )
    assert (p.numRetries, p.backoffFunction, p.maxReceivesPerSecond) == (5, "exponential", 5)
    for bad in [
        {"numRetries": -1},
        {"numRetries": 101},
        {"backoffFunction": "cubic"},
        {"minDelayTarget": 30, "maxDelayTarget": 20},
        {"colour": 1},
        {"numRetries": 1, "numNoDelayRetries": 2},
        {"maxReceivesPerSecond": 0},
        {"minDelayTarget": "1"},
        {"numRetries": True},
        "fast",
    ]:
        with pytest.raises(InvalidRequest):
            parse_policy(bad)  # type: ignore[arg-type]


def test_classify_outcomes() -> None:
    p = DeliveryPolicy(numRetries=2, minDelayTarget=1, maxDelayTarget=2)
    assert classify(204, "", 1, p).action == "ack"
    assert classify(500, "", 1, p) == classify(500, "", 1, p)
    assert (classify(500, "", 1, p).action, classify(500, "", 1, p).delay) == ("retry", 1.5)
    assert classify(429, "", 2, p).delay == 2.0
    assert classify(None, "connection refused", 1, p).error == "connection refused"
    exhausted = classify(503, "", 3, p)
    assert (exhausted.action, exhausted.error) == ("fail", "HTTP 503")
    assert classify(404, "", 1, p).action == "fail"  # client errors are not retried
    assert classify(301, "", 1, p).action == "fail"


def test_throttle_spaces_starts_with_injected_clock() -> None:
    t = Throttle(4.0)
    now = 100.0
    starts = []
    for _ in range(9):
        now += t.reserve(now)
        starts.append(now)
    # 9 starts at most 4 per second: evenly 0.25 s apart.
    assert starts == pytest.approx([100 + 0.25 * i for i in range(9)])
    for a in starts:
        assert sum(1 for b in starts if a <= b < a + 1) <= 4
    assert Throttle(None).reserve(5.0) == 0.0
    idle = Throttle(2.0)
    assert idle.reserve(0.0) == 0.0 and idle.reserve(10.0) == 0.0  # no burst debt


def test_endpoint_label_drops_credentials() -> None:
    from gateway.webhooks import endpoint_label

    assert endpoint_label("https://u:pw@h.example:8443/hook?key=abc#x") == (
        "https://h.example:8443/hook"
    )
