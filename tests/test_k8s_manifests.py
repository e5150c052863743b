"""Deployment artefacts: k8s manifests, Dockerfile and the example queue worker.

`scripts/k8s-check.sh` renders every kustomize overlay and validates it offline
(Kubernetes schemas, cross-object wiring, checkov, hadolint). Its first run
installs pinned tools into ~/.cache/herald-k8s-tools (about a minute); later
runs take seconds.

examples/worker.py is tested against real `herald serve` processes in
tests/clients/test_worker.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# k8s-check.sh
# --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)  # first run installs checkov & co. (~1-2 min on 2 cores)
def test_k8s_check_script_passes() -> None:
    env = {k: v for k, v in os.environ.items() if k != "K8S_CHECK_KEEP"}
    env.setdefault("PYTHON", sys.executable)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "k8s-check.sh")],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert proc.returncode == 0, f"k8s-check failed:\n{proc.stdout}\n{proc.stderr}"
    assert "k8s-check passed" in proc.stdout
    for overlay in ("dev", "prod"):
        assert f"k8s/overlays/{overlay} ->" in proc.stdout
