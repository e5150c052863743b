"""Start-up and client errors of the `herald` CLI: one line on stderr, non-zero exit.

Each case is something a new user hit: a typo in a setting, Redis not started, the
port already taken, a URL with nothing behind it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from procs import ROOT, HeraldServer, free_port, running
from shared.config import Settings

pytestmark = pytest.mark.integration


def herald(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    full_env.update({"HERALD_PORT": str(free_port()), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert out.returncode != 0, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_bad_engine_variable_names_it() -> None:
    one_line_error(herald("serve", env={"HERALD_ENGINE": "foo"}), "HERALD_ENGINE", "foo")


def test_bad_history_flag_names_it(tmp_path: Path) -> None:
    one_line_error(herald("serve", "--history", "not json"), "--history", "JSON")
    one_line_error(
        herald("serve", "--history", '[{"pattern": "a", "size": 0}]'), "--history[0][size]"
    )


def test_bad_slow_consumer_flag_names_it() -> None:
    one_line_error(herald("serve", "--slow-consumer", "foo"), "--slow-consumer", "drop")


def test_unwritable_data_dir_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    one_line_error(
        herald("serve", "--data-dir", str(blocker / "data")),
        str(blocker / "data"),
        "HERALD_DATA_DIR",
    )


def test_workers_need_the_redis_engine() -> None:
    one_line_error(herald("serve", "--workers", "2"), "--workers", "HERALD_ENGINE=redis")


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
def test_redis_down_names_the_url(scheme: str) -> None:
    url = f"{scheme}://:secret@127.0.0.1:{free_port()}/0"
    line = one_line_error(
        herald("serve", "--engine", "redis", "--redis-url", url),
        "cannot reach Redis",
        "HERALD_REDIS_URL",
        "refused",
    )
    assert "secret" not in line


def test_port_taken_says_what_to_do(tmp_path: Path) -> None:
    first = HeraldServer()
    with running(first):
        out = herald(
            "serve", env={"HERALD_PORT": str(first.port), "HERALD_DATA_DIR": str(tmp_path)}
        )
    one_line_error(out, f"port {first.port}", "already in use", "HERALD_PORT")
    assert "herald ready" not in out.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "game.1", "1"],
        ["tail", "game.>"],
        ["queue", "stats"],
    ],
)
def test_dead_url_is_one_line(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    one_line_error(herald(*command, "--url", url), "cannot reach", url)


def test_ready_is_logged_after_bind_with_urls_and_data_dir(tmp_path: Path) -> None:
    server = HeraldServer(env={"HERALD_LOG_LEVEL": "info"}, data_dir=tmp_path)
    with running(server):
        pass
    log = server.output()
    ready = [line for line in log.splitlines() if "herald ready" in line]
    assert len(ready) == 1, log
    assert f"ws://127.0.0.1:{server.port}/ws" in ready[0]
    assert f"http://127.0.0.1:{server.port}/docs" in ready[0]
    assert str(tmp_path.resolve()) in ready[0]
    # One format for Herald's and uvicorn's lines: "<date> <time> LEVEL logger: message".
    fmt = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
    for line in log.splitlines():
        assert fmt.match(line), line


def test_every_setting_is_a_serve_flag_with_default_and_variable() -> None:
    out = herald("serve", "--help", env={"COLUMNS": "250"})
    assert out.returncode == 0, out.stderr
    text = re.sub(r"[│\s]+", " ", out.stdout)
    for name in Settings.model_fields:
        flag = "--" + name.replace("_", "-")
        assert re.search(
            rf"{flag} [A-Z]+ .*?\(default: [^;]+; env: HERALD_{name.upper()}\)", text
        ), flag
    assert "<bool>" not in out.stdout


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"HERALD_{n.upper()}" for n in Settings.model_fields if f"HERALD_{n.upper()}" not in readme
    ]
    assert not missing, missing
