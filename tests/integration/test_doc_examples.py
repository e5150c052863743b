"""The docs stay true: every shell and Python example runs, and no link leaves the repo.

Each document's examples run in order against its own real `herald serve` (memory
engine, auth off, as `make run` starts it); `localhost:8080` in an example is rewritten
to that server's port, and `$HERALD` / `HERALD_URL` point at it. A block that cannot run
here (it builds images, needs a cluster, starts the server the test already started,
runs a long benchmark) is preceded by a marker comment that says why:

    <!-- doc-test: skip building an image needs docker -->
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from procs import ROOT, HeraldServer, running

pytestmark = pytest.mark.integration

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}
PYTHON = {"python", "py"}
FENCE = re.compile(r"^```(\S*)\s*$")
SKIP = re.compile(r"<!--\s*doc-test:\s*skip\s+(\S.*?)\s*-->")


@dataclass
class Example:
    doc: Path
    line: int
    lang: str
    code: str
    skip: str | None


def examples(doc: Path) -> list[Example]:
    """The fenced shell and Python blocks of `doc`, in order."""
    out: list[Example] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if lang in SHELL | PYTHON:
            before = lines[start - 1] if start else ""
            skip = SKIP.search(before)
            out.append(
                Example(
                    doc, start + 1, lang, "\n".join(body) + "\n", skip.group(1) if skip else None
                )
            )
    return out


RUNNABLE = [d for d in DOCS if any(e.skip is None for e in examples(d))]


@pytest.mark.parametrize("doc", RUNNABLE, ids=lambda d: d.name)
def test_examples_run_in_order(doc: Path, tmp_path: Path) -> None:
    server = HeraldServer()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HERALD_URL": server.http,
        "HERALD": server.http,
    }
    env.pop("HERALD_TOKEN", None)
    # Examples are written for a shell at the clone's root: `examples/...` resolves.
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    with running(server):
        for ex in examples(doc):
            if ex.skip is not None:
                continue
            code = ex.code.replace("localhost:8080", f"127.0.0.1:{server.port}").replace(
                "127.0.0.1:8080", f"127.0.0.1:{server.port}"
            )
            cmd = (
                ["bash", "-euo", "pipefail", "-c", code]
                if ex.lang in SHELL
                else [sys.executable, "-c", code]
            )
            out = subprocess.run(
                cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
            )
            assert out.returncode == 0, (
                f"{doc.name}:{ex.line} failed ({out.returncode})\n{code}\n"
                f"stdout: {out.stdout}\nstderr: {out.stderr}"
            )
            # curl without -f exits 0 on an HTTP error: an error body is a failure too.
            assert '{"error"' not in out.stdout, f"{doc.name}:{ex.line}: {out.stdout}"


def test_skipped_examples_say_why() -> None:
    for doc in DOCS:
        for ex in examples(doc):
            assert ex.skip is None or len(ex.skip.split()) >= 3, f"{doc.name}:{ex.line}"


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_no_path_leaves_the_repository(doc: Path) -> None:
    text = doc.read_text()
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # URLs and anchors
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name}: {target} leaves the repository"
        assert path.exists(), f"{doc.name}: {target} does not exist"
    for outside in ("../shared", "SPEC.md", "LESSONS.md", "SPEC §"):
        assert outside not in text, f"{doc.name} cites {outside}"


def test_no_file_cites_documents_outside_the_repository() -> None:
    """Comments and docs cite docs/ (protocol.md, http-api.md ...), never a file a clone lacks."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    pattern = re.compile(r"SPEC §|SPEC\.md|LESSONS|\.\./shared/")
    offenders = []
    for name in tracked:
        path = ROOT / name
        if name == "tests/integration/test_doc_examples.py" or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [
            f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)
        ]
    assert not offenders, offenders
