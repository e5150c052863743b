"""Acceptance of the admin console (/admin) in headless Chromium against real
gateways (issue 13): queues, the dead-letter flow, purge, subscriptions, publish,
live tail, charts, and the API key gate when auth is on."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pagekit import screenshot, wait_subscribed, wait_until
from playwright.sync_api import expect

from procs import ROOT, HeraldServer, RedisServer, stop_pid

pytestmark = pytest.mark.integration

Pods = tuple[HeraldServer, HeraldServer, RedisServer]
KEY = "admin-" + secrets.token_hex(8)


def queue(gw: HeraldServer, name: str) -> dict[str, Any]:
    r = httpx.get(f"{gw.http}/v1/queues/{name}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_queues_dead_letters_peek_redrive_and_purge(
    pods: Pods, page: Any, request: pytest.FixtureRequest
) -> None:
    a, b, _ = pods
    q = "work-" + secrets.token_hex(3)
    dlq = q + "-dlq"
    api = httpx.Client(base_url=b.http)  # created on B, the console runs on A
    request.addfinalizer(api.close)
    assert api.put(f"/v1/queues/{dlq}", json={}).status_code == 200
    dead_letter = {"queue": dlq, "max_receive_count": 2}
    assert api.put(f"/v1/queues/{q}", json={"dead_letter": dead_letter}).status_code == 200

    page.goto(f"{a.http}/admin")
    expect(page.get_by_role("row", name=q, exact=True)).to_be_visible()
    depth = page.get_by_role("cell", name=f"DLQ depth of {q}", exact=True)
    expect(depth).to_have_text("0")

    poison = api.post(f"/v1/queues/{q}/messages", json={"body": {"poison": q}}).json()["id"]
    for _ in range(2):  # received max_receive_count times, never acked
        got = api.post(f"/v1/queues/{q}/receive", json={"visibility_timeout": 0}).json()
        assert [m["id"] for m in got["messages"]] == [poison]
    # The next receive would exceed max_receive_count: the message moves instead.
    assert api.post(f"/v1/queues/{q}/receive", json={}).json()["messages"] == []
    expect(depth).to_have_text("1")

    page.get_by_role("button", name=f"Peek {dlq}", exact=True).click()
    peeked = page.get_by_role("listitem", name=f"Message {poison}")
    expect(peeked).to_contain_text(f'"poison": "{q}"')
    expect(peeked).to_contain_text(f"from {q}")
    assert queue(b, dlq)["visible"] == 1  # peeking received nothing

    page.get_by_role("button", name=f"Redrive {dlq}", exact=True).click()
    wait_until(lambda: queue(b, q)["visible"] == 1 and queue(b, dlq)["visible"] == 0, "redrive")
    expect(depth).to_have_text("0")

    # Purge asks first; Cancel keeps the message.
    page.get_by_role("button", name=f"Purge {q}", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Purge {q}?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert queue(b, q)["visible"] == 1
    page.get_by_role("button", name=f"Purge {q}", exact=True).click()
    dialog.get_by_role("button", name="Purge").click()
    wait_until(lambda: queue(b, q)["visible"] == 0, "purge")


def test_subscriptions_publish_tail_topics_and_charts(pods: Pods, page: Any) -> None:
    a, b, _ = pods
    q = "orders-" + secrets.token_hex(3)
    assert httpx.put(f"{b.http}/v1/queues/{q}", json={}).status_code == 200
    page.goto(f"{a.http}/admin")
    expect(page.get_by_role("row", name=q, exact=True)).to_be_visible()

    # A queue with a dead-letter queue, created and deleted from the console.
    made = q + "-made"
    page.get_by_label("Queue name").fill(made)
    page.get_by_label("Dead-letter queue", exact=True).select_option(q)
    page.get_by_label("Max receives").fill("3")
    page.get_by_role("button", name="Create queue").click()
    expect(page.get_by_role("row", name=made, exact=True)).to_be_visible()
    assert queue(b, made)["dead_letter"] == {"queue": q, "max_receive_count": 3}
    page.get_by_role("button", name=f"Delete {made}", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("row", name=made, exact=True)).to_have_count(0)
    assert httpx.get(f"{b.http}/v1/queues/{made}").status_code == 404

    # Topic -> queue subscription with a filter policy: created, listed, deleted.
    page.get_by_label("Topic or pattern").fill("orders.>")
    page.get_by_label("Queue", exact=True).select_option(q)
    page.get_by_label("Filter policy (JSON)").fill('{"region": ["eu"]}')
    page.get_by_role("button", name="Subscribe queue").click()
    row = page.get_by_role("row", name=f"orders.> to {q}")
    expect(row).to_contain_text('{"region":["eu"]}')

    def subs() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{b.http}/v1/subscriptions").json()[
            "subscriptions"
        ]
        return [s for s in found if s["queue"] == q]

    [sub] = subs()
    assert sub["topic"] == "orders.>" and sub["filter_policy"] == {"region": ["eu"]}
    page.get_by_role("button", name=f"Delete subscription orders.> to {q}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    wait_until(lambda: subs() == [], "the subscription deleted")
    expect(row).to_have_count(0)

    # Live tail with a filter; messages come from the publish form.
    page.get_by_label("Pattern", exact=True).fill("admin.>")
    page.get_by_label("Filter (JSON)").fill('{"k": ["yes"]}')
    page.get_by_role("button", name="Start tail").click()
    wait_subscribed(b, "admin.>")
    for n, k in ((1, "no"), (2, "yes")):
        page.get_by_label("Topic", exact=True).fill("admin.t")
        page.get_by_label("Data (JSON)").fill(f'{{"n": {n}}}')
        page.get_by_label("Attributes (JSON object)").fill(f'{{"k": "{k}"}}')
        page.get_by_role("button", name="Publish", exact=True).click()
        expect(page.get_by_role("status").filter(has_text="published")).to_be_visible()
    tail = page.get_by_role("list", name="Tailed messages")
    expect(tail).to_contain_text('admin.t {"n":2}')
    expect(tail.get_by_role("listitem")).to_have_count(1)

    # Topics with subscribers across pods, the history rules, and the live charts.
    topics = page.get_by_role("table", name="Topics")
    expect(topics.get_by_role("row", name="admin.> 1")).to_be_visible()
    expect(page.get_by_role("table", name="History rules")).to_contain_text("game.>")
    expect(page.get_by_role("img", name="Connections, last 60 seconds")).to_be_visible()
    expect(page.get_by_role("figure").filter(has_text="Subscriptions")).to_contain_text("1")


def test_charts_sum_every_pod_screenshots(pods: Pods, page: Any) -> None:
    a, b, _ = pods
    httpx.put(f"{a.http}/v1/queues/scores-dlq", json={})
    dead_letter = {"queue": "scores-dlq", "max_receive_count": 3}
    httpx.put(f"{a.http}/v1/queues/scores", json={"dead_letter": dead_letter})
    httpx.post(
        f"{a.http}/v1/subscriptions",
        json={"topic": "game.*.score", "queue": "scores", "filter_policy": {"gameId": ["g1"]}},
    )
    board = page.context.new_page()
    board.goto(f"{b.http}/demo/scores")  # on B: the console on A charts every pod
    page.goto(f"{a.http}/admin")
    wait_subscribed(a, "game.g1.score")
    args = ["--games", "6", "--rate", "30", "--duration", "20", "--seed", "5", "--url", a.http]
    demo = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        expect(page.get_by_role("row", name="scores", exact=True)).to_be_visible()
        for chart in ("Publishes/s", "Deliveries/s"):
            value = page.get_by_role("figure").filter(has_text=chart).locator("strong")
            wait_until(lambda v=value: v.inner_text() not in ("–", "0"), chart)
        for chart in ("Connections", "Subscriptions"):
            value = page.get_by_role("figure").filter(has_text=chart).locator("strong")
            expect(value).to_have_text("1")
        # A few seconds of samples, so the charts show a line.
        line = page.get_by_role("figure").filter(has_text="Publishes/s").locator("polyline")
        wait_until(lambda: len((line.get_attribute("points") or "").split()) >= 6, "samples")
        screenshot(page, "admin")
    finally:
        stop_pid(demo)


@pytest.fixture(scope="module")
def secured() -> Iterator[HeraldServer]:
    gw = HeraldServer(env={"HERALD_API_KEYS": KEY}).start()
    try:
        yield gw
    finally:
        gw.stop()


def test_auth_on_refuses_without_an_api_key(secured: HeraldServer, page: Any) -> None:
    assert httpx.get(f"{secured.http}/v1/topics").status_code == 401
    assert httpx.get(f"{secured.http}/v1/queues/x/peek").status_code == 401
    assert httpx.get(f"{secured.http}/v1/topics/a.b/presence").status_code == 401
    page.goto(f"{secured.http}/admin")
    expect(page.get_by_role("heading", name="Authentication required")).to_be_visible()
    queues = page.get_by_role("heading", name="Queues")
    expect(queues).to_be_hidden()

    page.get_by_label("API key").fill("not-the-key")
    page.get_by_role("button", name="Open the console").click()
    expect(page.get_by_role("alert")).to_contain_text("Refused")
    expect(queues).to_be_hidden()

    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Open the console").click()
    expect(queues).to_be_visible()
    expect(page.get_by_role("heading", name="Authentication required")).to_be_hidden()


def test_pages_and_console_apis_refuse_hostile_input(pods: Pods) -> None:
    a = pods[0]
    with httpx.Client(base_url=a.http) as http:
        for path in ("/demo/scores", "/admin", "/ui/herald.css", "/ui/admin/admin.js"):
            r = http.get(path)
            assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
        assert http.get("/ui/demo/scores.js").headers["content-type"].startswith("text/javascript")
        # Nothing outside gateway/static, however the path is spelled.
        for path in ("/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/..%2fapp.py", "/ui/", "/ui/nope"):
            r = http.get(path)
            assert r.status_code == 404, (path, r.status_code)
            assert "import" not in r.text
        assert http.put("/v1/queues/hostile", json={}).status_code == 200
        for query in ("max=0", "max=101", "max=x"):
            r = http.get(f"/v1/queues/hostile/peek?{query}")
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
        assert http.get("/v1/queues/nope/peek").status_code == 404
        for topic in ("a..b", "a.>.b", "x" * 2000):
            r = http.get(f"/v1/topics/{topic}/presence")
            assert r.status_code == 400, (topic, r.text)


def test_scores_page_with_auth_on_connects_with_a_token(secured: HeraldServer, page: Any) -> None:
    page.goto(f"{secured.http}/demo/scores?games=s1&batch_ms=100&token={KEY}")
    expect(page.get_by_role("status", name="Connection")).to_have_text("connected")
    wait_subscribed(secured, "game.s1.score", token=KEY)
    event = {
        "topic": "game.s1.score",
        "attributes": {"gameId": "s1"},
        "data": {"home": "Home", "away": "Away", "homeScore": 4, "awayScore": 2, "minute": 9},
    }
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(f"{secured.http}/v1/publish", json=event, headers=auth).status_code == 202
    game = page.get_by_role("listitem", name="Game s1")
    expect(game).to_contain_text("4")
    expect(game).to_contain_text("9'")
