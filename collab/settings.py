"""Settings: every option and limit of the server, declared once.

Each field has a default, a help text and an environment variable
(`COLLAB_<NAME>`); the command line (`collab serve --name value`) overrides
the environment, which overrides the default. A test checks that every
setting is documented in the README. A value refused is named as the user
gave it: by its flag (`--check-every`), or by its variable
(`COLLAB_CHECK_EVERY`) when it came from the environment.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from .errors import brief
from .storage import is_postgres, not_a_database

MIN_SECRET = 16  # characters of a secret, from --secret or a secret file: a shorter one is guessed
MIN_FRAME = 1024  # bytes: the smallest --max-frame (a hello with a long name and ids takes several hundred)


def flag(name: str) -> str:
    """The command-line option of the setting `name`: --check-every for check_every."""
    return "--" + name.replace("_", "-")


def _opt(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class Settings:
    host: str = _opt("127.0.0.1", "address to listen on")
    port: int = _opt(8080, "TCP port to listen on")
    db: str = _opt("./data/collab.db", "SQLite database file (created with its folder if missing), or a "
                   "postgresql://user:password@host:port/dbname URL (the database must exist)")
    sync: str = _opt("normal", "SQLite synchronous mode (WAL): both commit before an update is "
                     "acknowledged, so both survive a crash or kill of the server; 'full' also "
                     "fsyncs every commit and survives power loss, at a cost in throughput",
                     choices=("full", "normal"))
    snapshot_every: int = _opt(1000, "updates between the authorship checkpoints kept for the History's authors view "
                                "(full-text snapshots follow --snapshot-ratio)")
    keep_updates: int = _opt(2000, "updates per open document kept in memory for rebases and resumes, and "
                             "at most 16 MiB of their changes (older ones are read from disk when needed)")
    unload_after: float = _opt(30.0, "seconds a document stays in memory after its last connection leaves")
    heartbeat: float = _opt(20.0, "seconds between WebSocket pings; a peer that misses a pong is dropped")
    hello_timeout: float = _opt(10.0, "seconds a new connection has to send its hello")
    max_frame: int = _opt(1 << 20, "largest WebSocket frame accepted, in bytes (close 1009 above it; at least 1024)")
    max_doc: int = _opt(10 << 20, "largest document, in UTF-16 units of text (pushes beyond: too-large)")
    ws_compress: bool = _opt(True, "permessage-deflate on WebSockets whose client offers it: frames of "
                             "--ws-compress-threshold bytes or more go out compressed (a welcome with a large "
                             "document, a long resume), smaller ones never; clients may compress what they send")
    ws_compress_threshold: int = _opt(1024, "smallest outgoing WebSocket frame, in bytes, that is compressed "
                                      "when permessage-deflate is on (keystroke frames are about 100 bytes)")
    max_updates: int = _opt(1000, "most updates in one push")
    max_ranges: int = _opt(100, "most selection ranges in one presence frame")
    presence_interval: float = _opt(0.05, "seconds between two presence frames of a document: the "
                                    "cursor moves of that tick go out together, one frame per connection")
    presence_batch: int = _opt(64, "most people's cursor moves one presence frame carries (the rest go "
                                "in the next tick)")
    send_buffer: int = _opt(8 << 20, "bytes queued for a connection that does not read before it is "
                            "closed (it resumes from its version when it reconnects)")
    send_timeout: float = _opt(30.0, "seconds a connection may take nothing while data waits for it "
                               "before it is closed (it resumes when it reconnects)")
    max_buffered: int = _opt(256 << 20, "bytes queued for all connections together; a connection that "
                             "would pass it is closed (it resumes when it reconnects)")
    update_rate: float = _opt(200.0, "updates per second one connection may push on average "
                              "(pushes beyond: rate-limited; an update of many places counts one per 100 "
                              "of them)")
    update_burst: int = _opt(2000, "updates one connection may push at once above --update-rate")
    doc_update_rate: float = _opt(1000.0, "updates per second one document accepts on average, "
                                  "from everyone together (bounds how fast its history grows)")
    doc_update_burst: int = _opt(5000, "updates one document accepts at once above --doc-update-rate")
    snapshot_ratio: float = _opt(1.0, "write a full-text snapshot when the updates since the last one add "
                                 "up to this many times the document's size (so snapshots take at most "
                                 "about this share of the history's bytes, plus one document)")
    snapshot_min_bytes: int = _opt(64 << 10, "but never before the updates since the last snapshot add "
                                   "up to this many bytes")
    min_free_disk: int = _opt(200 << 20, "bytes that must stay free on the SQLite database's filesystem; "
                              "below it edits and new documents are refused (unavailable), reads go on")
    static_dir: str = _opt("", "a static/ folder as static/build.mjs leaves it: dist/ with index.html, "
                           "editor.html and the bundles (default: the pages installed with collab)")
    log_json: bool = _opt(False, "log JSON lines instead of plain text")
    loop: str = _opt("uvloop", "event loop: uvloop (faster) or asyncio (Python's own)", choices=("uvloop", "asyncio"))
    secret: str = _opt("", "secret that signs access tokens, 16 characters at least; with it (or --secret-file) "
                       "access control is on, without it the server is a personal instance on 127.0.0.1 only")
    secret_file: str = _opt("", "file holding the secret, 16 characters at least (./run.sh --public creates one "
                            "on first start)")
    allow_origin: str = _opt("", "comma-separated extra origins (https://host:port) allowed to open "
                             "WebSockets besides the server's own")
    rate: float = _opt(100.0, "frames per second one connection may send on average (token bucket)")
    burst: int = _opt(500, "frames one connection may send at once above the average rate")
    max_conns_per_doc: int = _opt(200, "most connections to one document (in each process)")
    reserved_edit_slots: int = _opt(40, "of --max-conns-per-doc, connections kept for people who may edit "
                                    "(at most half of them; view-only sessions get the rest)")
    max_conns_per_addr: int = _opt(100, "most connections from one client address")
    cert: str = _opt("", "TLS certificate file (PEM): serve HTTPS and WSS directly")
    key: str = _opt("", "TLS private key file (PEM) for --cert")
    trusted_proxy: str = _opt("", "comma-separated IP addresses of reverse proxies whose "
                              "X-Forwarded-For/-Proto headers are believed (each one: no networks or names)")
    allow_host: str = _opt("", "comma-separated host names served (name, name:port, or * for any) "
                           "besides 127.0.0.1, localhost and [::1] on the server's port; with access control "
                           "on and none given, every name is served")
    header_timeout: float = _opt(15.0, "seconds a client has to send a complete request head (and the body "
                                 "of a request that changes something); idle keep-alive connections close "
                                 "after it too; 0: no limit")
    max_connections: int = _opt(4096, "most open TCP connections, HTTP and WebSocket together (more are "
                                "answered 503 and closed); 0: no limit")
    max_status_conns: int = _opt(16, "most /status/ws connections at once")
    max_documents: int = _opt(10000, "most documents the server keeps: creating or forking more is refused "
                              "(too-large)")
    max_checkpoints: int = _opt(1000, "most named versions (checkpoints) one document keeps: naming one more "
                                "is refused (too-large) until a name is taken away; 0: no limit")
    write_rate: float = _opt(30.0, "forks, restores, renames and checkpoint names per minute one token, and one client "
                             "address, may make on average (beyond: 429 rate-limited with Retry-After); 0: no limit")
    write_burst: int = _opt(10, "forks, restores, renames and checkpoint names one token or address may make at once "
                            "above --write-rate")
    history_workers: int = _opt(1, "worker processes that compute restore diffs, authorship and the texts "
                                "of old versions, off the event loop")
    history_queue: int = _opt(8, "restore diffs, authorship requests and old versions' texts that may wait "
                              "for a worker; more are refused (unavailable)")
    history_timeout: float = _opt(15.0, "seconds one restore diff, authorship request or rebuild of an old "
                                  "version's text may take, waiting for a worker included; a restore may "
                                  "first wait as long for another "
                                  "restore of the document, at any process (unavailable after either; an "
                                  "authorship request asked again goes on where it stopped)")
    history_memory: int = _opt(2 << 30, "bytes of memory one history worker may use (too-large beyond)")
    authors_max_runs: int = _opt(200_000, "most author runs one /authors answer holds (too-large beyond)")
    redis: str = _opt("", "redis://host:port/db of a Redis server that several collab processes on one "
                      "PostgreSQL database use to tell one another of updates and cursors at once "
                      "(without it they poll the database); never holds any of your data")
    check_every: float = _opt(1.0, "with several processes: seconds between checks of every open "
                              "document against the database while Redis is up (one query for all of them: "
                              "a message Redis lost is read from the database within this)")
    poll_every: float = _opt(0.3, "with several processes: seconds between those checks while Redis is "
                             "unreachable or not configured")
    presence_republish: float = _opt(10.0, "with several processes: seconds between two republications of "
                                     "this process's cursors")
    presence_expiry: float = _opt(30.0, "with several processes: seconds after which another process's "
                                  "cursors are dropped when no news of them came (their process is gone)")
    keep_history: int = _opt(0, "for `collab compact`: update rows kept per document "
                             "(older versions stay readable at snapshot granularity); 0 keeps all")

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            key = "COLLAB_" + f.name.upper()
            if key in environ:
                values[f.name] = _convert(f, environ[key], key)
        values.update(overrides)
        try:
            return cls(**values)
        except ValueError as exc:  # its messages name flags: a value from the environment is named as it was given
            message = str(exc)
            for name in values.keys() - overrides.keys():
                message = re.sub(re.escape(flag(name)) + r"(?![\w-])", "COLLAB_" + name.upper(), message)
            raise ValueError(message) from None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in fields(cls):
            help_text = f"{f.metadata['help']} (env COLLAB_{f.name.upper()}, default {f.default!r})"
            if f.type in ("bool", bool):
                parser.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                    default=None, help=help_text)
            else:
                parser.add_argument(flag(f.name), dest=f.name, default=None, help=help_text,
                                    type=_TYPES[f.type], choices=f.metadata.get("choices"))

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: dict | None = None) -> "Settings":
        given = {f.name: getattr(args, f.name) for f in fields(cls)
                 if getattr(args, f.name, None) is not None}
        return cls.from_env(environ, **given)

    def __post_init__(self):
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", float) and not math.isfinite(value):  # nan and inf pass every comparison below
                problems.append(f"{flag(f.name)} must be a finite number (got {value})")
            elif f.type in ("int", "float", int, float) and value < 0:
                problems.append(f"{flag(f.name)} must not be negative (got {value})")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                problems.append(f"{flag(f.name)} must be one of {', '.join(choices)} (got {value!r})")
        if not 0 < self.port < 65536 and self.port != 0:
            problems.append(f"--port must be 1-65535 (got {self.port})")
        if self.snapshot_every < 1:
            problems.append("--snapshot-every must be at least 1")
        if self.max_frame < MIN_FRAME:  # 0 is no "no limit": every frame from outside is bounded
            problems.append(f"--max-frame must be at least {MIN_FRAME} bytes, so that a hello fits "
                            f"(got {self.max_frame})")
        if self.secret and len(self.secret) < MIN_SECRET:  # as for --secret-file: a short secret is guessed
            problems.append(f"--secret must be {MIN_SECRET} characters at least")
        if self.rate <= 0 or self.burst < 1:
            problems.append("--rate must be positive and --burst at least 1")
        if self.update_rate <= 0 or self.update_burst < self.max_updates:
            problems.append("--update-rate must be positive and --update-burst at least --max-updates "
                            "(a full push must be able to pass)")
        if self.doc_update_rate <= 0 or self.doc_update_burst < self.max_updates:
            problems.append("--doc-update-rate must be positive and --doc-update-burst at least --max-updates")
        if not self.db.strip():
            problems.append("--db must be a SQLite file path or a postgresql:// URL (got nothing)")
        elif (why := not_a_database(self.db)) is not None:
            problems.append(f"--db {why}")
        if self.redis and not is_postgres(self.db):
            problems.append("--redis is for several processes on one PostgreSQL database, and --db is a SQLite "
                            "file, which one process serves")
        if self.redis and not self.redis.startswith(("redis://", "rediss://", "unix://")):
            problems.append("--redis must be a redis:// (or rediss://, unix://) URL")
        if self.poll_every <= 0 or self.check_every <= 0:
            problems.append("--poll-every and --check-every must be positive")
        if self.presence_expiry <= self.presence_republish:
            problems.append("--presence-expiry must be longer than --presence-republish")
        if self.history_workers < 1 or self.history_timeout <= 0:
            problems.append("--history-workers must be at least 1 and --history-timeout positive")
        if self.presence_batch < 1:
            problems.append("--presence-batch must be at least 1")
        if self.max_updates < 1:  # 0 is no "no limit": every push would be too-large
            problems.append("--max-updates must be at least 1 (a push carries one update or more)")
        if self.max_ranges < 1:
            problems.append("--max-ranges must be at least 1 (a cursor is one range)")
        if self.max_doc < 1:
            problems.append("--max-doc must be at least 1 (at 0 nobody could type a character)")
        if self.send_buffer < MIN_FRAME:
            problems.append(f"--send-buffer must be at least {MIN_FRAME} bytes (a connection must be able to "
                            f"have a frame waiting; got {self.send_buffer})")
        for entry in entries(self.trusted_proxy):
            try:
                ipaddress.ip_address(entry)
                if "%" in entry:  # a socket reports the peer without its zone
                    raise ValueError(entry)
            except ValueError:
                problems.append(f"--trusted-proxy takes the IP address of each proxy, {brief(entry)} is "
                                "none (a network, a host name, brackets, a port or a zone (%eth0) would never "
                                "match a connection)")
        for entry in entries(self.allow_origin):
            if (why := _origin_problem(entry)) is not None:
                problems.append(f"--allow-origin {brief(entry)} {why}")

        if bool(self.cert) != bool(self.key):
            problems.append("--cert and --key go together")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))

    def load_secret(self) -> bytes | None:
        """The signing secret, from --secret or --secret-file; None for an open personal instance."""
        if self.secret:
            return self.secret.encode()
        if self.secret_file:
            try:
                value = Path(self.secret_file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read the secret file {self.secret_file}: {exc.strerror}") from None
            if len(value) < MIN_SECRET:
                raise ValueError(f"the secret in {self.secret_file} is too short ({MIN_SECRET} characters at least)")
            return value.encode()
        return None


_TYPES = {"str": str, "int": int, "float": float, str: str, int: int, float: float}


def entries(value: str) -> list[str]:
    """The entries of a comma-separated setting (--allow-host, --allow-origin, --trusted-proxy),
    stripped, empty ones left out."""
    return [e.strip() for e in value.split(",") if e.strip()]


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_problem(entry: str) -> str | None:
    """Why `entry` can never equal an Origin header a browser sends (None if it can): a scheme and a host
    (an extension's or an app's origin, chrome-extension://id, tauri://localhost, too), a port only if it
    is not the default of http or https, nothing else."""
    try:
        parts = urlsplit(entry.rstrip("/"))
        port = parts.port
    except ValueError:
        return "is not an origin like https://host:port"
    scheme = parts.scheme.lower()
    if not scheme or not parts.hostname:
        return "is not an origin like https://host:port (a scheme and a host name)"
    if (parts.path or parts.query or parts.fragment or parts.username is not None
            or "?" in entry or "#" in entry or parts.netloc.endswith(":")):
        return "must be scheme://host[:port] only, as browsers send it in the Origin header"
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        return (f"names {scheme}'s default port, which browsers leave out of the Origin header: "
                f"write {scheme}://{parts.netloc.rsplit(':', 1)[0]}")
    return None


def _convert(f, raw: str, key: str):
    kind = f.type
    try:
        if kind in ("bool", bool):
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        return _TYPES[kind](raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a valid {kind}") from None
