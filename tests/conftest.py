"""Shared fixtures: a real server subprocess per test (`server`), and the Node test tools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from serverproc import ROOT, ServerProcess

JS_DIR = ROOT / "tests" / "js"


@pytest.fixture
def server(tmp_path):
    """A running server on a fresh database; killed at the end of the test."""
    proc = ServerProcess(tmp_path / "collab.db")
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture(scope="session")
def node() -> str:
    """Path to node, with tests/js/node_modules installed; fails loudly otherwise."""
    exe = shutil.which("node")
    if not exe:
        pytest.fail("node is not installed: the differential and client tests need it (run ./run.sh test)")
    if not (JS_DIR / "node_modules" / "@codemirror" / "collab").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True)
    return exe
