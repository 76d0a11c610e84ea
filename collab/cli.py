"""The `collab` command: serve, migrate."""

from __future__ import annotations

import argparse
import logging
import sys

from .settings import Settings


def _logging(settings: Settings) -> None:
    if settings.log_json:
        from .logs import JsonFormatter
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def serve(settings: Settings) -> None:
    from aiohttp import web

    from .app import create_app
    _logging(settings)
    web.run_app(create_app(settings), host=settings.host, port=settings.port, shutdown_timeout=10,
                print=lambda _: print(f"collab: listening on http://{settings.host}:{settings.port}", flush=True),
                access_log=None)


def migrate(settings: Settings) -> None:
    from pathlib import Path

    from .store import apply_migrations, connect_sync
    Path(settings.db).parent.mkdir(parents=True, exist_ok=True)
    conn = connect_sync(settings.db, settings.sync.upper())
    applied = apply_migrations(conn)
    conn.close()
    print(f"collab: {settings.db}: " + (f"applied {', '.join(applied)}" if applied else "schema up to date"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="collab", description="Self-hosted real-time collaborative editor")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("serve", "run the server"), ("migrate", "apply database migrations and exit")):
        p = sub.add_parser(name, help=help_text)
        Settings.add_arguments(p)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    {"serve": serve, "migrate": migrate}[args.command](settings)


if __name__ == "__main__":
    main(sys.argv[1:])
