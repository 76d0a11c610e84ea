"""The `collab` command: serve, migrate, and the admin commands (admin.py).

Every subcommand takes every setting (`--db`, `--sync`, ... or COLLAB_*), so
an admin command run next to the server reads the same environment; all but
`serve` ignore `--redis`, so a cluster's environment (COLLAB_REDIS) does
not stop them working on a SQLite file, a backup say. A
mistake on the command line is one line on stderr, exit status 2 (an option
or value it does not take) or 1 (anything else), named after what the user
ran: `collab CMD`, or run.sh (which says so in COLLAB_RUN_AS).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .resources import ResourceMissing
from .settings import Settings
from .storage import AlreadyServing, DatabaseTooNew, NoPermission, NotOurs, StorageUnavailable


def _logging(settings: Settings) -> None:
    if settings.log_json:
        from .logs import JsonFormatter
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    from .httpguard import install_flood_filters
    install_flood_filters()  # out of file descriptors or under attack: one line a minute, not a flood


def tls_context(settings: Settings):
    """The server's TLS context for --cert/--key, or None to serve plain HTTP."""
    if not settings.cert:
        return None
    import ssl
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2 or newer
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"collab: cannot use --cert {settings.cert} --key {settings.key}: {exc}") from None
    return context


def serve(settings: Settings) -> None:
    import asyncio

    from .app import create_app
    from .access import Access
    try:
        secret = settings.load_secret()
    except ValueError as exc:  # a secret file that is missing, or a secret too short
        raise SystemExit(f"collab: {exc}") from None
    from . import storage
    storage.check_ours(settings.db)  # NotOurs: another program's database is left alone
    if secret is None and not is_loopback(settings.host):
        raise SystemExit(f"collab: refusing to listen on {settings.host} with no access control: give a "
                         "secret (--secret, COLLAB_SECRET or --secret-file; ./run.sh --public makes one), "
                         "or listen on 127.0.0.1")
    _logging(settings)
    ssl_context = tls_context(settings)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"{'https' if ssl_context else 'http'}://{host}:{settings.port}"

    try:
        app = create_app(settings)
    except ValueError as exc:  # a setting only the app can check (--allow-host)
        raise SystemExit(f"collab: {exc}") from None

    def announce():
        said = []
        if secret is not None:
            # Never in the logs (stdout may be the journal): in a file only this user can read, and
            # on the console when there is one. Written before "listening on" is said: whoever waits
            # for that line finds the file.
            shown = url.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]")
            link = f"{shown}/?token={Access(secret).admin_token()}"
            path = admin_link_file(settings).absolute()  # said in full: ./run.sh may be run from another folder
            try:
                write_private(path, link + "\n")
                said.append(f"collab: access control is on; the admin link is in {path} (readable by this user "
                            "only)")
            except OSError as exc:
                said.append(f"collab: access control is on; cannot write the admin link to {path}: {exc.strerror}")
            if sys.stdout.isatty():
                said.append(f"collab: admin link: {link}")
        print(f"collab: listening on {url}", flush=True)
        print(f"collab: database {database(settings.db)}", flush=True)
        for line in said:
            print(line, flush=True)

    if settings.loop == "uvloop":
        import uvloop  # what aiohttp recommends: less CPU per frame (bench/README.md has the figures)
        uvloop.install()
    asyncio.run(_listen(app, settings, ssl_context, announce))
    logging.getLogger("collab").info("stopped")


def database(db: str) -> str:
    """The database `collab serve` says it serves: the SQLite file's absolute path, or the PostgreSQL URL with
    its password masked (and, when it names no database, which one PostgreSQL picks)."""
    from pathlib import Path
    from urllib.parse import parse_qs, urlsplit

    from .storage import describe, is_postgres
    if not is_postgres(db):
        return str(Path(db).resolve())
    parts = urlsplit(db)
    if parts.path.strip("/") or {"dbname", "database"} & parse_qs(parts.query).keys():
        return describe(db)
    return f"{describe(db)} (no database name: PostgreSQL's default, $PGDATABASE or the user's name)"


async def _listen(app, settings: Settings, ssl_context, announce) -> None:
    """Serve `app` until SIGINT or SIGTERM, then shut down gracefully (what web.run_app does, logging that it
    stops), through httpguard.Listener: the connection cap and the request-head deadline."""
    import asyncio
    import gc
    import signal

    from aiohttp import web

    from . import httpguard
    log = logging.getLogger("collab")
    soft = httpguard.raise_open_file_limit(settings.max_connections)
    if settings.max_connections and soft < settings.max_connections + httpguard.FILES_BESIDES_CONNECTIONS:
        log.warning("the open-file limit is %d, too low for --max-connections %d: connections beyond about %d "
                    "will fail (raise it: ulimit -n, or LimitNOFILE= in the systemd unit)", soft,
                    settings.max_connections, max(0, soft - httpguard.FILES_BESIDES_CONNECTIONS))
    timeout = settings.header_timeout
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10,
                           **({"keepalive_timeout": timeout} if timeout else {}))
    await runner.setup()
    # Everything made so far (modules, the app, the open store) lives as long as the process: the cyclic
    # collector's full passes need not visit it again and again. Garbage first, so none is kept for good.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    listener = httpguard.Listener(runner.server, timeout, settings.max_connections)
    tls = {"ssl": ssl_context, "ssl_handshake_timeout": timeout or None} if ssl_context else {}
    try:
        server = await loop.create_server(listener, settings.host, settings.port, backlog=512, **tls)
    except OSError as exc:  # the port is taken, the address is not this machine's, ...
        await runner.cleanup()
        raise SystemExit(f"collab: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") \
            from None
    stop = asyncio.Event()
    stopped_by = []

    def on_signal(sig: signal.Signals) -> None:
        stopped_by.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    announce()
    try:
        await stop.wait()
        # In the journal, a stop is then told from a crash (serve() logs "stopped" when it is done).
        log.info("stopping (%s): finishing commits, closing %d connection%s", stopped_by[0], listener.open,
                 "" if listener.open == 1 else "s")
    finally:
        server.close()
        await runner.cleanup()


def admin_link_file(settings: Settings):
    """Where the admin link is written: next to the secret file, else next to the database."""
    from pathlib import Path
    if settings.secret_file:
        return Path(settings.secret_file).parent / "admin-link"
    from .storage import is_postgres
    if not is_postgres(settings.db):
        return Path(settings.db).parent / "admin-link"
    return Path("data") / "admin-link"  # a PostgreSQL URL: beside ./data/secret, as ./run.sh --public keeps it


def write_private(path, text: str) -> None:
    """Write `text` to `path` with mode 0600, replacing it whole (never through a symlink)."""
    import os
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(temp, path)


def is_loopback(host: str) -> bool:
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def migrate(settings: Settings) -> None:
    """Create the database's schema or bring it up to date (SQLite: the file too; PostgreSQL: the database
    must exist). Safe when several processes run it at once on PostgreSQL (an advisory lock)."""
    from . import storage
    storage.check_ours(settings.db)  # NotOurs: another program's database is left alone
    applied = storage.migrate(settings.db, settings.sync)
    print(f"collab: {storage.describe(settings.db)}: "
          + (f"applied {', '.join(applied)}" if applied else "schema up to date"))


COMMANDS = (
    ("serve", "run the server"),
    ("migrate", "apply database migrations and exit"),
    ("backup", "copy the database to FILE, consistently, while the server runs"),
    ("export", "write every document's current text to DIR/name.txt"),
    ("import", "create a document from each DIR/name.txt whose name is not taken"),
    ("compact", "drop update rows older than --keep-history per document (snapshots stay)"),
    ("docs", "list documents: name, version, length, last update"),
    ("copy", "copy every document with its whole history from database SOURCE into the empty database TARGET "
             "(SQLite files or PostgreSQL URLs; TARGET left out: --db or COLLAB_DB), then check the copy"),
)


def version() -> str:
    """The installed distribution's version (package metadata); a bare checkout has none."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("collab")
    except PackageNotFoundError:
        return "unknown (not installed: run `pip install .`)"


def _who(prog: str) -> str:
    """What the user ran, for error messages: run.sh runs `collab migrate` and `collab serve` under its name."""
    return os.environ.get("COLLAB_RUN_AS") or prog


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but a mistake is one line (argparse prints the whole usage above it)."""

    def error(self, message: str):
        who = _who(self.prog)
        self.exit(2, f"{who}: error: {message} ({who} --help lists the options)\n")


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="collab", description="Self-hosted real-time collaborative editor")
    parser.add_argument("--version", action="version", version=f"collab {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {}
    for name, help_text in COMMANDS:
        parsers[name] = p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "backup":
            p.add_argument("file", metavar="FILE", help="where to write the copy (a new SQLite file)")
            p.add_argument("--force", action="store_true", help="replace FILE if it exists")
        elif name in ("export", "import"):
            p.add_argument("dir", metavar="DIR", help="folder of name.txt files")
        elif name == "copy":
            p.add_argument("source", metavar="SOURCE", help="database to copy from (a SQLite file or a "
                           "postgresql:// URL)")
            p.add_argument("target", metavar="TARGET", nargs="?", help="empty database to copy into (a SQLite "
                           "file, created if missing, or the URL of an existing PostgreSQL database); left out, "
                           "the database of --db or COLLAB_DB, which must then be given (a URL with its password "
                           "is better kept off a command line, which every user sees in ps)")
        Settings.add_arguments(p)
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # named after the command, whose --help lists its options (`collab --help` lists only the commands)
        before = argv[:argv.index(args.command)] if args.command in argv else []
        stray = [a for a in extra if a in before]  # before the command: `collab`'s own, not the command's
        (parser if stray else parsers[args.command]).error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if args.command != "serve":
        args.redis = ""  # only the server tells other processes of updates (see the module header)
    if args.command == "copy" and args.target is None and args.db is None and "COLLAB_DB" not in os.environ:
        # (as Settings.from_env reads it: COLLAB_DB set, even empty, is the database given, checked there)
        parsers["copy"].error("TARGET is missing: name it, or give the database with --db or COLLAB_DB")
    try:
        settings = Settings.from_args(args)
    except ValueError as exc:
        parsers[args.command].error(str(exc))
    import sqlite3
    who = _who(f"collab {args.command}")
    try:
        _run(args, settings)
    except KeyboardInterrupt:  # Ctrl-C: what it stopped says what it left (copy), no traceback
        raise SystemExit(f"{who}: interrupted") from None
    except (ResourceMissing, StorageUnavailable, DatabaseTooNew, NotOurs, AlreadyServing, NoPermission) as exc:
        # An incomplete installation, a database that cannot be reached, is newer than this collab, is not
        # ours, is served already, or is not ours to make tables in: say so, no traceback.
        raise SystemExit(f"{who}: error: {exc}") from None
    except sqlite3.DatabaseError as exc:  # not a database file, a folder, a file it may not open
        raise SystemExit(f"{who}: error: cannot use the SQLite database {settings.db}: {exc}") from None


def _run(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "serve":
        return serve(settings)
    if args.command == "migrate":
        return migrate(settings)
    from . import admin
    run = {
        "backup": lambda: admin.backup(settings, args.file, force=args.force),
        "export": lambda: admin.export(settings, args.dir),
        "import": lambda: admin.import_(settings, args.dir),
        "compact": lambda: admin.compact(settings),
        "docs": lambda: admin.docs(settings),
        "copy": lambda: admin.copy(settings, args.source, args.target if args.target is not None else settings.db),
    }[args.command]
    try:
        status = run()
    except admin.AdminError as exc:
        print(f"collab {args.command}: error: {exc}", file=sys.stderr)
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
