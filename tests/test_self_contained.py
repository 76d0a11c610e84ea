"""The repository stands alone: nothing in it refers to a path outside it.

Every tracked text file (git ls-files; binary files, node_modules and built
bundles left out) is searched for references to the folder next to the
checkout that used to hold the protocol and the traces, and for absolute
paths of the machine the project was written on. Every relative link in the
Markdown files must lead to a file or folder of the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from serverproc import ROOT

# Spelled in pieces so that this file does not match itself.
_SIBLING = r"(?:\.\./)+" + "shared" + r"\b"
_BARE_SHARED = r"(?<![\w./-])" + "shared/" + r"(?:protocol\.md|style\.md|traces\b)"
_MACHINE = r"(?<![\w.-])/" + "work" + r"/"
OUTSIDE = re.compile("|".join((_SIBLING, _BARE_SHARED, _MACHINE)))

SKIPPED_DIRS = {"node_modules", "dist", ".git", ".venv", "__pycache__"}

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def repository_files(root: Path) -> list[Path]:
    """Tracked files of `root` (every file under it when it is not a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    files = []
    for name in names:
        if SKIPPED_DIRS & set(Path(name).parts[:-1]):
            continue
        path = root / name
        if path.is_file():  # a tracked file deleted in the working tree is not there to check
            files.append(path)
    return files


def text_of(path: Path) -> str | None:
    """The file as text, or None when it is binary (a NUL byte, or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def outside_references(root: Path) -> list[str]:
    found = []
    for path in repository_files(root):
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in OUTSIDE.finditer(line):
                found.append(f"{path.relative_to(root)}:{number}: {match.group(0)!r} in {line.strip()[:120]}")
    return found


def markdown_links(text: str) -> list[str]:
    """Link targets of a Markdown text, outside code blocks and code spans."""
    prose = _CODE.sub("", _FENCE.sub("", text))
    return _INLINE_LINK.findall(prose) + _REFERENCE.findall(prose)


def broken_links(root: Path) -> list[str]:
    broken = []
    for path in repository_files(root):
        if path.suffix.lower() != ".md":
            continue
        for target in markdown_links(path.read_text(encoding="utf-8")):
            if _SCHEME.match(target) or target.startswith("#"):
                continue  # a web address, or a place in the same page
            local = target.split("#", 1)[0].split("?", 1)[0]
            resolved = (root / local.lstrip("/")) if local.startswith("/") else (path.parent / local)
            resolved = resolved.resolve()
            if not resolved.is_relative_to(root.resolve()) or not resolved.exists():
                broken.append(f"{path.relative_to(root)}: ({target})")
    return broken


def test_nothing_refers_to_a_path_outside_the_repository():
    found = outside_references(ROOT)
    assert not found, "files that refer outside the repository:\n" + "\n".join(found)


def test_every_relative_markdown_link_resolves():
    broken = broken_links(ROOT)
    assert not broken, "links that lead nowhere in the repository:\n" + "\n".join(broken)


def test_readme_and_docs_have_links_to_check():
    """The link check sees the README's links (a parser that found none would pass vacuously)."""
    targets = markdown_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "docs/protocol.md" in targets and "docs/deploy.md" in targets


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A small git repository with one of each problem and the things that are fine."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "static" / "node_modules" / "x").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text("See [the protocol](protocol.md) and [home](../README.md#top).\n")
    (root / "README.md").write_text(
        "# x\n[guide](docs/guide.md), [web](https://example.com/a.md), [here](#x), [gone](docs/missing.md)\n"
        "![shot](static/screenshot.png)\n\n```\n[in code](nowhere.md)\n```\n"
        "[escape](../../etc/passwd)\n[ref]: docs/also-missing.md\n")
    (root / "a.py").write_text("# the contract: " + "../" + "shared" + "/protocol.md\nx = 1\n")
    (root / "b.mjs").write_text("const p = '/" + "work/main/x';\nconst q = '/workers/ok';\n")
    (root / "c.md").write_text("from `" + "shared" + "/traces` next door\n")
    (root / "fine.txt").write_text("ok: docs/protocol.md, /tmp/x, framework/shared/, sharedlib/\n")
    (root / "static" / "node_modules" / "x" / "y.js").write_text("'/" + "work/'\n")
    (root / "blob.bin").write_bytes(b"\0/" + b"work/")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return root


def test_the_checks_find_what_was_planted(planted: Path):
    found = outside_references(planted)
    assert sorted(f.split(":")[0] for f in found) == ["a.py", "b.mjs", "c.md"], found
    broken = broken_links(planted)
    assert sorted(broken) == sorted([
        "README.md: (docs/missing.md)", "README.md: (../../etc/passwd)", "README.md: (docs/also-missing.md)",
        "docs/guide.md: (protocol.md)", "README.md: (static/screenshot.png)"]), broken
