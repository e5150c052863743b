"""The product ships without its harness: the wheel has no `loadtest`, and the
product's packages never import it (issue 10)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("shared", "fanout", "gateway")


def test_product_sources_never_mention_loadtest() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{n}"
        for pkg in PRODUCT
        for path in sorted((ROOT / pkg).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bloadtest\b", line)
    ]
    assert hits == []


def test_wheel_has_the_product_and_not_the_harness(tmp_path: Path) -> None:
    # Build from a copy, so the build's own scratch (build/, *.egg-info) never lands
    # in the checkout; loadtest/ is copied too, so the exclusion is what is tested.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    for name in (*PRODUCT, "loadtest"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = out.glob("herald-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == set(PRODUCT)
    assert "gateway/cli.py" in names
    assert "gateway/py.typed" in names


def test_docker_build_context_leaves_the_harness_out() -> None:
    # .dockerignore is an allow-list ("*" then "!path"): the image gets only what it names.
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines
    allowed = {line[1:].strip("/") for line in lines if line.startswith("!")}
    assert set(PRODUCT) <= allowed
    assert not allowed & {"loadtest", "tests", "docs", "k8s"}
