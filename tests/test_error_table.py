"""One error table: collab/errors.py, docs/protocol.md, the README and the JS core list the same codes.

collab/errors.py is the source (`CODES`: code, HTTP status, the close code a
refusal ends a connection with by itself, who was wrong; `CLOSE_CODES`). This
module reads the others as a person would:
  * docs/protocol.md's error table (`| code | HTTP | close | who | meaning |`):
    the close column's first token is the close by itself ("—" for none);
    what follows in brackets are closes in particular places and is not
    compared. Its close-code table (`| close | when | what a client does |`);
  * the README's "Protocol in brief": every backticked word of its
    "Error codes:" bullet, and every four-digit number of its "Close codes:"
    bullet;
  * the browser's core (static/src/core.js): the keys of ERROR_CODES and
    CLOSE_CODES, read by node.
Each must name exactly the codes of errors.py; the doc's table must also give
each code its status, close and who. The planted tests show that a code added
to errors.py alone (or a row dropped, a status changed) is reported.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace

import pytest

from collab import errors
from collab.errors import Code
from conftest import install_node_packages
from serverproc import ROOT

PROTOCOL = ROOT / "docs" / "protocol.md"
README = ROOT / "README.md"
NO_CLOSE = "—"


# ------------------------------------------------------------------- readers

def _table(text: str, header: str) -> list[list[str]]:
    """The body rows (cells stripped) of the Markdown table whose header row is `header`."""
    lines = text.splitlines()
    starts = [k for k, line in enumerate(lines) if line.strip() == header]
    if len(starts) != 1:
        raise AssertionError(f"expected one table headed {header!r}, found {len(starts)}")
    rows = []
    for line in lines[starts[0] + 2:]:  # the header, then the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def doc_error_table(text: str) -> dict[str, tuple[int, int | None, str]]:
    """code -> (HTTP status, close by itself or None, who) from docs/protocol.md's error table."""
    out: dict[str, tuple[int, int | None, str]] = {}
    for row in _table(text, "| code | HTTP | close | who | meaning |"):
        if len(row) != 5:
            raise AssertionError(f"error table row without 5 cells: {row}")
        name = re.fullmatch(r"`([a-z]+(?:-[a-z]+)*)`", row[0])
        status = re.fullmatch(r"\d{3}", row[1])
        close = re.match(rf"({NO_CLOSE}|\d{{4}})(?:\s|$)", row[2])
        if not (name and status and close and row[3] in ("peer", "us")):
            raise AssertionError(f"error table row not understood: {row}")
        if name[1] in out:
            raise AssertionError(f"the error table lists {name[1]!r} twice")
        out[name[1]] = (int(status[0]), None if close[1] == NO_CLOSE else int(close[1]), row[3])
    return out


def doc_close_table(text: str) -> list[int]:
    """The close codes of docs/protocol.md's close-code table, in order."""
    codes = []
    for row in _table(text, "| close | when | what a client does |"):
        if not re.fullmatch(r"\d{4}", row[0]):
            raise AssertionError(f"close table row not understood: {row}")
        codes.append(int(row[0]))
    return codes


def _bullet(section: str, label: str) -> str:
    """The text of the top-level bullet of `section` that starts with `- {label}`."""
    found = re.findall(rf"^- {re.escape(label)}(.*?)(?=^- |^\s*$|\Z)", section, re.M | re.S)
    if len(found) != 1:
        raise AssertionError(f"expected one bullet '- {label}' in the README's Protocol in brief, found {len(found)}")
    return found[0]


def readme_codes(text: str) -> tuple[list[str], list[int]]:
    """(error codes, close codes) listed in the README's "Protocol in brief"."""
    match = re.search(r"^## Protocol in brief\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not match:
        raise AssertionError("the README has no '## Protocol in brief' section")
    section = match[1]
    error_codes = re.findall(r"`([^`]*)`", _bullet(section, "Error codes:"))
    close_codes = [int(c) for c in re.findall(r"\b\d{4}\b", _bullet(section, "Close codes:"))]
    return error_codes, close_codes


def js_tables() -> tuple[list[str], list[int]]:
    """(ERROR_CODES keys, CLOSE_CODES keys) of the browser's core, as node imports it."""
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not installed: this test reads the JS core's tables (run ./run.sh test)")
    install_node_packages()
    script = ("import { ERROR_CODES, CLOSE_CODES } from './static/src/core.js';"
              "console.log(JSON.stringify({errors: Object.keys(ERROR_CODES), closes: Object.keys(CLOSE_CODES)}));")
    proc = subprocess.run([node, "--input-type=module", "-e", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    tables = json.loads(proc.stdout)
    return tables["errors"], [int(c) for c in tables["closes"]]


# ------------------------------------------------------------------- checks

def _same(where: str, listed: list, expected, kind: str) -> list[str]:
    problems = []
    missing = sorted(set(expected) - set(listed), key=str)
    extra = sorted(set(listed) - set(expected), key=str)
    if missing:
        problems.append(f"{where} is missing the {kind} {missing}")
    if extra:
        problems.append(f"{where} has {kind} that errors.py does not: {extra}")
    twice = sorted({c for c in listed if listed.count(c) > 1}, key=str)
    if twice:
        problems.append(f"{where} has the {kind} {twice} more than once")
    return problems


def problems(codes: dict[str, Code], close_codes: dict[int, str], protocol: str, readme: str,
             js: tuple[list[str], list[int]]) -> list[str]:
    """Every way the doc, the README and the JS core differ from `codes` and `close_codes`."""
    out = []
    table = doc_error_table(protocol)
    out += _same("docs/protocol.md's error table", list(table), codes, "error codes")
    for name, (status, close, who) in table.items():
        code = codes.get(name)
        if code is None:
            continue
        if status != code.http:
            out.append(f"docs/protocol.md gives {name!r} HTTP {status}, errors.py {code.http}")
        if close != code.close:
            out.append(f"docs/protocol.md says {name!r} closes by itself with {close or NO_CLOSE}, "
                       f"errors.py with {code.close or 'nothing'}")
        if who != ("peer" if code.peer else "us"):
            out.append(f"docs/protocol.md says {name!r} is the fault of {who!r}, errors.py of "
                       f"{'the peer' if code.peer else 'us'}")
    out += _same("docs/protocol.md's close-code table", doc_close_table(protocol), close_codes, "close codes")
    readme_errors, readme_closes = readme_codes(readme)
    out += _same("the README's error-code list", readme_errors, codes, "error codes")
    out += _same("the README's close-code list", readme_closes, close_codes, "close codes")
    js_errors, js_closes = js
    out += _same("static/src/core.js ERROR_CODES", js_errors, codes, "error codes")
    out += _same("static/src/core.js CLOSE_CODES", js_closes, close_codes, "close codes")
    return out


@pytest.fixture(scope="module")
def sources() -> tuple[str, str, tuple[list[str], list[int]]]:
    return (PROTOCOL.read_text(encoding="utf-8"), README.read_text(encoding="utf-8"), js_tables())


def planted(codes: dict[str, Code], close_codes: dict[int, str], sources, protocol: str | None = None,
            readme: str | None = None, js=None) -> list[str]:
    """The problems a planted change adds to those the real files have (none, when the first test passes)."""
    real_protocol, real_readme, real_js = sources
    before = problems(errors.CODES, errors.CLOSE_CODES, real_protocol, real_readme, real_js)
    after = problems(codes, close_codes, protocol or real_protocol, readme or real_readme, js or real_js)
    return [p for p in after if p not in before]


def test_every_list_names_the_codes_of_errors_py(sources):
    protocol, readme, js = sources
    found = problems(errors.CODES, errors.CLOSE_CODES, protocol, readme, js)
    assert not found, "\n".join(found)


def test_the_readers_see_every_table(sources):
    """The readers find what is there (a reader that found nothing would only fail on the comparison)."""
    protocol, readme, js = sources
    assert len(doc_error_table(protocol)) >= 14
    assert len(doc_close_table(protocol)) >= 8
    readme_errors, readme_closes = readme_codes(readme)
    assert len(readme_errors) >= 14 and len(readme_closes) >= 8
    assert len(js[0]) >= 14 and len(js[1]) >= 8


# ------------------------------------------------------------- planted changes

def test_a_code_added_to_errors_py_alone_is_reported_everywhere(sources):
    codes = {**errors.CODES, "too-busy": Code("too-busy", 503, None, False, "a code only errors.py has")}
    found = planted(codes, errors.CLOSE_CODES, sources)
    assert len(found) == 3 and all("'too-busy'" in p for p in found), found
    closes = {**errors.CLOSE_CODES, 4002: "a close only errors.py has"}
    found = planted(errors.CODES, closes, sources)
    assert len(found) == 3 and all("4002" in p for p in found), found


def test_a_changed_status_close_or_who_is_reported(sources):
    codes = dict(errors.CODES)
    codes["conflict"] = replace(codes["conflict"], http=400)
    codes["unavailable"] = replace(codes["unavailable"], close=errors.CLOSE_INTERNAL)
    codes["internal"] = replace(codes["internal"], peer=True)
    found = planted(codes, errors.CLOSE_CODES, sources)
    assert len(found) == 3, found
    assert any("'conflict' HTTP 409" in p for p in found)
    assert any("'unavailable' closes by itself with —" in p for p in found)
    assert any("'internal' is the fault of 'us'" in p for p in found)


def test_dropped_or_extra_entries_in_the_doc_and_readme_are_reported(sources):
    protocol, readme, _ = sources
    row = next(line for line in protocol.splitlines() if line.startswith("| `read-only` |"))
    close_row = next(line for line in protocol.splitlines() if line.startswith("| 4001 |"))
    changed = protocol.replace(row + "\n", "").replace(close_row + "\n", close_row + "\n| 4999 | x | y |\n")
    found = planted(errors.CODES, errors.CLOSE_CODES, sources, protocol=changed)
    assert sorted(found) == sorted([
        "docs/protocol.md's error table is missing the error codes ['read-only']",
        "docs/protocol.md's close-code table has close codes that errors.py does not: [4999]"]), found
    changed = readme.replace("`bad-version`, ", "").replace("1013 fell", "1012 fell")
    assert changed.count("`bad-version`") == readme.count("`bad-version`") - 1 and "1012 fell" in changed
    found = planted(errors.CODES, errors.CLOSE_CODES, sources, readme=changed)
    assert sorted(found) == sorted([
        "the README's error-code list is missing the error codes ['bad-version']",
        "the README's close-code list is missing the close codes [1013]",
        "the README's close-code list has close codes that errors.py does not: [1012]"]), found


def test_the_js_core_is_compared_too(sources):
    js_errors, js_closes = sources[2]
    found = planted(errors.CODES, errors.CLOSE_CODES, sources,
                    js=([c for c in js_errors if c != "conflict"] + ["gone"], js_closes[1:]))
    assert sorted(found) == sorted([
        "static/src/core.js ERROR_CODES is missing the error codes ['conflict']",
        "static/src/core.js ERROR_CODES has error codes that errors.py does not: ['gone']",
        f"static/src/core.js CLOSE_CODES is missing the close codes [{js_closes[0]}]"]), found
