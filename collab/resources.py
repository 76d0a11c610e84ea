"""Where collab's own files are: the database migrations and the static pages.

Rules that always hold:
  * the files are looked up as package data of `collab` first (through
    `importlib.resources`): a wheel, `pip install .` or a zip install carry
    them as `collab/migrations/<backend>/` and `collab/static/` (pyproject.toml
    maps the top-level `migrations/` and `static/` folders there);
  * only when the package does not carry a folder, and the folder above the
    package is collab's own source tree (it holds collab's pyproject.toml),
    that tree's top-level folder is used: running from a checkout, and
    `pip install -e .`;
  * what is returned is a real directory on disk (aiohttp's static routes and
    FileResponse need one). Package data that is not on disk (a zip install)
    is copied once into a temporary folder that is removed at exit;
  * a migrations folder that is missing or holds no `*.sql` file, or a
    static folder that is missing, raises `ResourceMissing` naming where it
    looked, so a server never starts on an empty schema.
"""

from __future__ import annotations

import atexit
import importlib.resources
import shutil
import tempfile
from importlib.resources.abc import Traversable
from pathlib import Path

_PACKAGE = "collab"
_CHECKOUT = Path(__file__).resolve().parent.parent
BACKENDS = ("sqlite", "postgres")


class ResourceMissing(RuntimeError):
    """A folder collab cannot run without is missing or empty."""


def migrations_dir(backend: str = "sqlite") -> Path:
    """The folder of `NNN_name.sql` migrations for `backend`; raises ResourceMissing if absent or empty."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown storage backend {backend!r}; known: {', '.join(BACKENDS)}")
    found, looked = _find("migrations", backend)
    if found is None or not any(found.glob("*.sql")):
        where = found if found is not None else " and ".join(looked)
        raise ResourceMissing(f"no {backend} migrations (*.sql) in {where}: this collab installation "
                              "is incomplete (reinstall it, or run it from a complete checkout)")
    return found


def static_dir() -> Path:
    """The folder holding index.html, editor.html and dist/; raises ResourceMissing if it is nowhere.

    Its files are checked when a page is served (api.py answers 404 naming the missing file).
    """
    found, looked = _find("static")
    if found is None:
        raise ResourceMissing(f"no static pages folder in {' or '.join(looked)}: this collab installation "
                              "is incomplete (reinstall it, or run it from a complete checkout)")
    return found


def _find(*parts: str) -> tuple[Path | None, list[str]]:
    """The folder `parts` as package data, else in the source tree; with every place looked in."""
    packaged = importlib.resources.files(_PACKAGE).joinpath(*parts)
    looked = [f"the {_PACKAGE} package ({packaged})"]
    if packaged.is_dir():
        return _on_disk(packaged, "/".join(parts)), looked
    if (_CHECKOUT / "pyproject.toml").is_file() and _is_our_project(_CHECKOUT / "pyproject.toml"):
        source = _CHECKOUT.joinpath(*parts)
        looked.append(f"the source tree ({source})")
        if source.is_dir():
            return source, looked
    return None, looked


def _is_our_project(pyproject: Path) -> bool:
    import tomllib
    try:
        return tomllib.loads(pyproject.read_text()).get("project", {}).get("name") == _PACKAGE
    except (OSError, ValueError):
        return False


_extracted: dict[str, Path] = {}


def _on_disk(folder: Traversable, name: str) -> Path:
    """`folder` as a real directory: itself when it is one, else a copy extracted once (zip installs).

    importlib.resources.as_file extracts directories only from Python 3.12 on,
    so the copy is made here by walking the Traversable; it lives until exit.
    """
    if isinstance(folder, Path):
        return folder
    if name not in _extracted:
        target = Path(tempfile.mkdtemp(prefix="collab-")) / name
        atexit.register(shutil.rmtree, target.parent, True)
        _copy(folder, target)
        _extracted[name] = target
    return _extracted[name]


def _copy(source: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_dir():
            _copy(item, target / item.name)
        else:
            (target / item.name).write_bytes(item.read_bytes())
