"""The keep-alive wheel, stepped with an explicit clock (no sleeping)."""

from __future__ import annotations

from gateway.keepalive import KeepAlive


class Conn:
    def __init__(self) -> None:
        self.last_seen = 0.0
        self.ping_sent = 0.0
        self.pings = 0
        self.dead = False

    def send_ping(self, now: float) -> None:
        self.pings += 1
        self.ping_sent = now

    def on_dead(self) -> None:
        self.dead = True

    def pong(self, now: float) -> None:
        self.ping_sent = 0.0
        self.last_seen = now


def run(
    ka: KeepAlive,
    until: float,
    start: float = 0.0,
    conns: list[Conn] | None = None,
    answer: list[Conn] | None = None,
) -> float:
    t = start
    while t < until:
        t += ka.tick
        ka.step(t)
        for c in answer or []:
            if c.ping_sent:
                c.pong(t)
    return t


def test_answering_peer_is_pinged_every_interval_and_kept() -> None:
    ka = KeepAlive(interval=1.0, timeout=1.0)
    c = Conn()
    ka.add(c)
    run(ka, 10.0, answer=[c])
    assert not c.dead and 8 <= c.pings <= 11
    assert len(ka) == 1


def test_silent_peer_is_closed_after_timeout() -> None:
    ka = KeepAlive(interval=1.0, timeout=0.5)
    c = Conn()
    ka.add(c)
    run(ka, 3.0)
    assert c.dead and c.pings == 1 and len(ka) == 0


def test_busy_peer_is_not_pinged() -> None:
    ka = KeepAlive(interval=1.0, timeout=1.0)
    c = Conn()
    ka.add(c)
    t = 0.0
    while t < 5.0:
        t += ka.tick
        c.last_seen = t  # traffic every tick
        ka.step(t)
    assert c.pings == 0 and not c.dead


def test_removed_connection_is_never_closed() -> None:
    ka = KeepAlive(interval=1.0, timeout=0.5)
    c = Conn()
    ka.add(c)
    run(ka, 1.2)
    ka.remove(c)
    run(ka, 5.0, start=1.2)
    assert not c.dead


def test_peer_that_talks_but_never_pongs_is_pinged_again_and_dropped_once_silent() -> None:
    """Liveness never depends on a pong: any frame keeps a peer, silence drops it."""
    ka = KeepAlive(interval=1.0, timeout=1.0)  # tick 0.2 s
    c = Conn()
    ka.add(c)
    t = 0.0
    while t < 8.0:  # a frame every 1.4 s (quiet long enough to be pinged), no pong ever
        t += ka.tick
        if round(t / ka.tick) % 7 == 0:
            c.last_seen = t
        ka.step(t)
    assert not c.dead and c.pings >= 2  # old code: one ping, then never again
    run(ka, 12.0, start=t)  # now silent
    assert c.dead and len(ka) == 0
