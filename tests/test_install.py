"""Installing collab: the wheel carries the migrations and the pages, and runs far from the checkout.

The wheel is built from a copy of the source tree (what a clone holds, without
node_modules or build leftovers), installed into a new virtual environment in
a temporary folder (its dependencies come from the package index, so the
dependency list is tested too), and every command runs with an unrelated
working directory. The editable install and a zip install (the wheel on
sys.path) run the same checks on their own layouts. A collab whose migrations
folder is missing or empty must refuse to start, naming where it looked.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import aiohttp
import pytest

from serverproc import ROOT, free_port

PAGES = {"index.html", "editor.html"}
TABLES = {"schema_version", "documents", "updates", "snapshots"}

# Left out of the copy the wheel is built from: what a fresh clone does not have.
_NOT_IN_A_CLONE = {".git", ".venv", "node_modules", "__pycache__", ".hypothesis", ".pytest_cache", "build"}
_NOT_IN_A_CLONE_AT_TOP = {"data", "test-artifacts", "dist"}


def _clone_like(dest: Path) -> Path:
    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in _NOT_IN_A_CLONE or n.endswith(".egg-info")}
        if Path(folder) == ROOT:
            skip |= {n for n in names if n in _NOT_IN_A_CLONE_AT_TOP}
        return skip
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


def _run(cmd: list, cwd: Path, timeout: float = 120, env: dict | None = None, check: bool = True):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _clean_env(**extra) -> dict:
    """The environment without anything that would make Python find the checkout's collab."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _new_venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", "--without-pip", path], cwd=path.parent)
    return path / "bin" / "python"


def _pip(python: Path, *args, cwd: Path):
    """This test run's pip, installing into another environment (pip's --python)."""
    return _run([sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check", "-q",
                 *args], cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("install")
    source = _clone_like(work / "source")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
          "-w", work / "wheels", source], cwd=work, timeout=300)
    [wheel] = (work / "wheels").glob("collab-*.whl")
    return {"work": work, "source": source, "wheel": wheel}


@pytest.fixture(scope="module")
def venv(built) -> dict:
    """The wheel installed into a new venv, dependencies from the index."""
    python = _new_venv(built["work"] / "venv")
    _pip(python, "install", "--no-compile", built["wheel"], cwd=built["work"])
    return {**built, "python": python, "bin": python.parent}


def _wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def test_the_wheel_carries_migrations_and_pages_and_nothing_else_of_static(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    migrations = {n.removeprefix("collab/migrations/") for n in names if n.startswith("collab/migrations/")}
    assert migrations == {f"{p.parent.name}/{p.name}" for p in (ROOT / "migrations").glob("*/*.sql")}
    assert {m.split("/")[0] for m in migrations} == {"sqlite", "postgres"}
    assert migrations, "no migrations in the wheel"
    static = {n.removeprefix("collab/static/") for n in names if n.startswith("collab/static/")}
    expected = PAGES | {p.relative_to(ROOT / "static").as_posix()
                        for p in (ROOT / "static" / "dist").rglob("*") if p.is_file()}
    assert static == expected
    assert any(n.startswith("dist/") and n.endswith(".js") for n in static)
    assert not [n for n in names if "node_modules" in n or n.startswith(("tests/", "bench/"))]


def test_the_source_distribution_carries_what_builds_the_editor(built, tmp_path):
    # static/dist is built from static/src (cd static && npm ci && node build.mjs): an sdist without
    # the sources and the lockfile could not be rebuilt or checked against them.
    _run([sys.executable, "-m", "build", "--sdist", "--outdir", tmp_path, built["source"]], cwd=tmp_path,
         timeout=300)
    [sdist] = tmp_path.glob("collab-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    tracked = _run(["git", "ls-files", "static/src", "migrations"], cwd=ROOT).stdout.split()
    assert tracked and set(tracked) <= names
    assert {"LICENSE", "README.md", "pyproject.toml", "run.sh", "docs/protocol.md", "static/package.json",
            "static/package-lock.json", "static/build.mjs", "collab/cli.py"} <= names
    assert {p.relative_to(ROOT).as_posix() for p in (ROOT / "static" / "dist").rglob("*") if p.is_file()} <= names
    assert not [n for n in names if "node_modules" in n]


def test_run_sh_gives_a_venv_without_pip_its_pip(built, tmp_path):
    # A .venv made --without-pip (or whose pip was removed) used to stop run.sh at its first install.
    source = _clone_like(tmp_path / "checkout")
    _new_venv(source / ".venv")
    result = _run([source / "run.sh", "--help"], cwd=tmp_path, timeout=600, env=_clean_env())
    assert "has no pip: adding it" in result.stderr
    assert "usage: collab serve" in result.stdout
    _run([source / ".venv" / "bin" / "python", "-m", "pip", "--version"], cwd=tmp_path)


def _checkout_with_a_venv(tmp_path: Path) -> Path:
    """A clone-like checkout whose .venv run.sh takes as installed: no pip, this run's dependencies through a
    .pth file (not its .pth files, so not its editable collab: `-m collab` imports the checkout's), and the
    stamp run.sh leaves after installing."""
    source = _clone_like(tmp_path / "checkout")
    python = _new_venv(source / ".venv")
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp_path).stdout.strip())
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    stamp = hashlib.sha256((source / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (source / ".venv" / ".installed").write_text(stamp + "\n")
    return source


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_run_sh_help_shows_the_options_of_serve(tmp_path, flag):
    # run.sh runs `collab migrate` with the same arguments before `collab serve`: --help printed migrate's.
    source = _checkout_with_a_venv(tmp_path)
    result = _run([source / "run.sh", "--port", free_port(), flag], cwd=tmp_path, timeout=60, env=_clean_env())
    assert "installing collab" not in result.stderr, result.stderr  # the prepared .venv was taken as it is
    assert "usage: collab serve" in result.stdout and "--max-frame" in result.stdout, result.stdout
    assert "collab migrate" not in result.stdout, result.stdout
    assert not (source / "data").exists(), "--help made a database or a secret"


def test_run_sh_public_works_after_other_options(tmp_path):
    # `./run.sh --port P --public` was refused: --public was run.sh's only as the first argument.
    source = _checkout_with_a_venv(tmp_path)
    port = free_port()
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(source / "run.sh"), "--port", str(port), "--public", "--host", "127.0.0.1"],
                                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=_clean_env())
    try:
        deadline = time.monotonic() + 30
        while "collab: listening on" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, f"run.sh exited with {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"run.sh did not start:\n{log_path.read_text()}"
            time.sleep(0.05)
        assert (source / "data" / "secret").stat().st_size > 0
        # Was 0755: made for the secret before run.sh's umask 077, which says "readable by this user only".
        assert stat.S_IMODE((source / "data").stat().st_mode) == 0o700, oct((source / "data").stat().st_mode)
        assert (source / "data" / "admin-link").read_text().startswith(f"http://127.0.0.1:{port}/?token=")
        # run.sh was run from another folder (tmp_path): the file is named where it is, not as data/admin-link,
        # which named a file in the caller's folder.
        assert f"the admin link is in {source / 'data' / 'admin-link'} " in log_path.read_text(), log_path.read_text()
        with pytest.raises(urllib.error.HTTPError) as refused:  # access control is on
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/docs", timeout=5)
        assert refused.value.code == 401
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # run.sh exec'd collab serve: this pid is the server's
            proc.wait(15)
    assert proc.returncode == 0, log_path.read_text()


def test_installed_collab_runs_from_its_own_files(venv, tmp_path):
    site = Path(_run([venv["python"], "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=_clean_env()).stdout.strip())
    out = _run([venv["python"], "-c", "import collab, collab.resources as r; "
                "print(collab.__file__); print(r.migrations_dir()); print(r.static_dir())"],
               cwd=tmp_path, env=_clean_env()).stdout.split()
    assert [Path(p) for p in out] == [site / "collab" / "__init__.py", site / "collab" / "migrations" / "sqlite",
                                      site / "collab" / "static"]


def test_version_comes_from_the_package_metadata(venv, tmp_path):
    out = _run([venv["bin"] / "collab", "--version"], cwd=tmp_path, env=_clean_env()).stdout.strip()
    assert out == f"collab {_wheel_version(venv['wheel'])}"
    assert re.fullmatch(r"collab \d+\.\d+\.\d+\S*", out)


def _tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def _migration_count() -> int:
    return len(list((ROOT / "migrations" / "sqlite").glob("*.sql")))


def test_migrate_creates_the_schema(venv, tmp_path):
    db = tmp_path / "data" / "x.db"
    out = _run([venv["bin"] / "collab", "migrate", "--db", db], cwd=tmp_path, env=_clean_env()).stdout
    assert "001_" in out
    assert TABLES <= _tables(db)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == _migration_count()
    conn.close()
    again = _run([venv["bin"] / "collab", "migrate", "--db", db], cwd=tmp_path, env=_clean_env()).stdout
    assert "up to date" in again


class _Server:
    """`collab serve` started from `cwd`, stopped by its pid."""

    def __init__(self, cmd: list, cwd: Path, db: Path, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(c) for c in [*cmd, "serve", "--port", self.port, "--db", db]],
                                         cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"collab serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"collab serve did not answer /healthz:\n{self.output()}")

    def get(self, path: str) -> tuple[int, bytes, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers.get("Content-Type", "")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise


async def _check_server(server: _Server) -> None:
    status, body, ctype = server.get("/")
    assert status == 200 and ctype.startswith("text/html") and b"<html" in body.lower()
    status, page, ctype = server.get("/d/some-doc")
    assert status == 200 and ctype.startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.decode())
    assert any(a.endswith(".js") for a in assets), page[:500]
    for asset in assets:
        status, body, _ = server.get(asset)
        assert status == 200 and len(body) > 100, asset
    status, body, _ = server.get("/healthz")
    assert status == 200

    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{server.port}/ws/some-doc", protocols=["collab.v1"]) as ws:
            assert ws.protocol == "collab.v1"
            await ws.send_json({"type": "hello", "clientID": "installed", "version": None,
                                "user": {"name": "Tester", "color": "#3366ff"}})
            welcome = await ws.receive_json(timeout=5)
            assert (welcome["type"], welcome["version"], welcome["doc"]) == ("welcome", 0, "")
            update = {"clientID": "installed", "changes": [[0, "hello from a wheel"]]}
            await ws.send_json({"type": "push", "version": 0, "updates": [update]})
            echo = await ws.receive_json(timeout=5)
            assert type(echo.pop("docId")) is str  # the frame that made the document says which
            assert echo == {"type": "updates", "from": 0, "updates": [update]}
    status, body, _ = server.get("/api/docs/some-doc")
    assert status == 200 and b"hello from a wheel" in body


async def test_installed_server_serves_pages_bundle_healthz_and_websocket(venv, tmp_path):
    server = _Server([venv["bin"] / "collab"], tmp_path, tmp_path / "y.db", _clean_env())
    try:
        await _check_server(server)
    finally:
        code = server.stop()
    assert code == 0, server.output()
    assert TABLES <= _tables(tmp_path / "y.db")


def test_editable_install_finds_the_source_tree(built, tmp_path):
    """`pip install -e`: the files come from the (copied) source tree; dependencies from this run's venv."""
    python = _new_venv(tmp_path / "venv")
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp_path).stdout.strip())
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _pip(python, "install", "--no-deps", "-e", built["source"], cwd=tmp_path)
    out = _run([python, "-c", "import collab, collab.resources as r; "
                "print(collab.__file__); print(r.migrations_dir()); print(r.static_dir())"],
               cwd=tmp_path, env=_clean_env()).stdout.split()
    source = built["source"]
    assert [Path(p) for p in out] == [source / "collab" / "__init__.py", source / "migrations" / "sqlite",
                                      source / "static"]
    db = tmp_path / "e.db"
    _run([python.parent / "collab", "migrate", "--db", db], cwd=tmp_path, env=_clean_env())
    assert TABLES <= _tables(db)


async def test_zip_install_extracts_its_files(built, tmp_path):
    """The wheel itself on sys.path (zipimport): pages and migrations are extracted to a temporary folder."""
    env = _clean_env(PYTHONPATH=str(built["wheel"]))
    out = _run([sys.executable, "-c", "import collab, collab.resources as r; "
                "print(collab.__file__); print(r.migrations_dir()); print(r.static_dir()); "
                "print(sorted(p.name for p in r.static_dir().iterdir()))"],
               cwd=tmp_path, env=env).stdout.splitlines()
    assert out[0].startswith(str(built["wheel"]))
    extracted = Path(out[2])
    assert not extracted.is_relative_to(ROOT) and "dist" in out[3] and "editor.html" in out[3]
    assert not extracted.exists(), "the extracted copy outlives the process"
    server = _Server([sys.executable, "-m", "collab"], tmp_path, tmp_path / "z.db", env)
    try:
        await _check_server(server)
    finally:
        code = server.stop()
    assert code == 0, server.output()


@pytest.mark.parametrize("layout", ["installed, folder missing", "installed, folder empty",
                                    "source tree, folder empty"])
def test_missing_or_empty_migrations_refuse_to_start(tmp_path, layout):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "collab", tree / "collab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "static", tree / "collab" / "static",
                    ignore=shutil.ignore_patterns("node_modules", "src"))
    if layout == "installed, folder empty":
        (tree / "collab" / "migrations" / "sqlite").mkdir(parents=True)
    if layout == "source tree, folder empty":
        shutil.copy(ROOT / "pyproject.toml", tree)
        (tree / "migrations" / "sqlite").mkdir(parents=True)
        (tree / "migrations" / "sqlite" / "README").write_text("not a migration")
    expected = tree / ("migrations" if layout.startswith("source") else "collab/migrations") / "sqlite"
    env = _clean_env(PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "collab"]

    migrate = _run([*cmd, "migrate", "--db", tmp_path / "m.db"], cwd=tmp_path, env=env, check=False)
    assert migrate.returncode != 0
    assert "no sqlite migrations" in migrate.stderr and str(expected) in migrate.stderr, migrate.stderr
    assert "Traceback" not in migrate.stderr
    assert "documents" not in _tables(tmp_path / "m.db")

    port = free_port()
    serve = _run([*cmd, "serve", "--port", port, "--db", tmp_path / "s.db"], cwd=tmp_path, env=env,
                 timeout=15, check=False)
    assert serve.returncode != 0
    assert "no sqlite migrations" in serve.stderr and str(expected) in serve.stderr, serve.stderr
