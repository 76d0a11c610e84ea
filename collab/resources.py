"""Where collab's own files are: the database migrations and the static pages.

Placeholder until packaging is done: both are found in the source tree.
"""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def migrations_dir(backend: str = "sqlite") -> Path:
    return _ROOT / "migrations"


def static_dir() -> Path:
    return _ROOT / "static"
