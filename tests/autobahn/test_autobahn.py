"""RFC 6455 conformance: Autobahn|Testsuite's fuzzing client against Herald's edge.

The suite (Python 2.7, `make autobahn-venv`) runs cases 1–7 and 10, and the case-9
performance cases whose messages fit Herald's configured `max_frame_bytes`, against
tests/autobahn/echo_server.py. A case may be NON-STRICT or INFORMATIONAL; none may
be FAILED. docs/autobahn.md records the latest summary.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest

from procs import ROOT, free_port, stop_pid, wait_port
from shared.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WSTEST = ROOT / ".autobahn-venv" / "bin" / "wstest"
ECHO_SERVER = Path(__file__).with_name("echo_server.py")
MIB = 1 << 20
# Message size of each case-9 group (the suite's own definitions).
CASE9_SIZES = {
    **{
        f"9.1.{i}": s
        for i, s in enumerate([MIB // 16, MIB // 4, MIB, 4 * MIB, 8 * MIB, 16 * MIB], 1)
    },
    **{
        f"9.2.{i}": s
        for i, s in enumerate([MIB // 16, MIB // 4, MIB, 4 * MIB, 8 * MIB, 16 * MIB], 1)
    },
    **{f"9.{g}.{i}": 4 * MIB for g in (3, 4) for i in range(1, 10)},
    **{f"9.{g}.{i}": MIB for g in (5, 6) for i in range(1, 7)},
    **{f"9.{g}.{i}": 4096 for g in (7, 8) for i in range(1, 7)},
}


def cases() -> list[str]:
    limit = Settings().max_frame_bytes
    return [
        *(f"{n}.*" for n in (1, 2, 3, 4, 5, 6, 7, 10)),
        *(c for c, s in CASE9_SIZES.items() if s <= limit),
    ]


def test_autobahn_fuzzingclient_has_no_failed_case(tmp_path: Path) -> None:
    assert WSTEST.exists(), "Autobahn|Testsuite is missing: run `make autobahn-venv`"
    port = free_port()
    with (tmp_path / "server.log").open("wb") as log:  # the child keeps its own descriptor
        server = subprocess.Popen(
            [sys.executable, str(ECHO_SERVER), str(port)], stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        wait_port(port, proc=server)
        spec = {
            "outdir": str(tmp_path / "report"),
            "servers": [{"agent": "Herald", "url": f"ws://127.0.0.1:{port}/ws"}],
            "cases": cases(),
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        run = subprocess.run(
            [str(WSTEST), "-m", "fuzzingclient", "-s", "spec.json"],
            cwd=tmp_path,
            capture_output=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    finally:
        stop_pid(server)
    results = json.loads((tmp_path / "report" / "index.json").read_text())["Herald"]
    behaviors = collections.Counter(r["behavior"] for r in results.values())
    print(f"autobahn: {len(results)} cases, {dict(behaviors)}")
    failed = sorted(
        case for case, r in results.items() if "FAILED" in (r["behavior"], r["behaviorClose"])
    )
    assert not failed, f"Autobahn FAILED cases: {failed}"
    assert len(results) >= 247 + 20  # every selected case ran
    assert not (tmp_path / "server.log").read_text().count("Traceback")
