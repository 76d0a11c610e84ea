"""The browser's protocol core (static/src/core.js) under node's test runner, and its code tables.

The core's own unit tests (static/test/*.test.mjs) need no server: fake
frames in, the frames and decisions the core returns out. This module runs
them as part of the Python suite, insists that they really ran (a runner
that finds no file also exits 0), and checks that the core's error and
close tables name exactly the codes of collab/errors.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from collab import errors
from conftest import install_node_packages
from serverproc import ROOT

STATIC = ROOT / "static"
MIN_TESTS = 50  # the suite has more; fewer means files were not found or a test file did not load


@pytest.fixture(scope="module")
def node_static() -> str:
    """node, with static/node_modules installed (the core imports @codemirror/* from there)."""
    exe = shutil.which("node")
    if not exe:
        pytest.fail("node is not installed: the JS core tests need it (run ./run.sh test)")
    install_node_packages()
    return exe


def test_core_unit_tests_pass(node_static):
    proc = subprocess.run([node_static, "--test", "static/test/"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    summary = dict((k, int(v)) for k, v in re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$",
                                                       proc.stdout, re.M))
    failed = [line for line in proc.stdout.splitlines() if line.lstrip().startswith("not ok")]
    assert proc.returncode == 0, f"node --test static/test/ failed: {failed}\n{out[-6000:]}"
    assert summary.get("fail") == 0 and summary.get("cancelled") == 0, summary
    assert summary.get("skipped") == 0 and summary.get("todo") == 0, summary
    assert summary.get("pass", 0) >= MIN_TESTS, f"only {summary.get('pass')} tests ran: {summary}\n{out[-3000:]}"


def test_core_tables_name_the_servers_codes(node_static):
    script = ("import { ERROR_CODES, CLOSE_CODES } from './static/src/core.js';"
              "console.log(JSON.stringify({errors: Object.keys(ERROR_CODES), closes: Object.keys(CLOSE_CODES)}));")
    proc = subprocess.run([node_static, "--input-type=module", "-e", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    tables = json.loads(proc.stdout)
    assert sorted(tables["errors"]) == sorted(errors.CODES)
    assert sorted(int(c) for c in tables["closes"]) == sorted(errors.CLOSE_CODES)
