"""HTTP-side guards: which requests reach the routes at all, how fast writes may come, how long a
client may take to speak, how many connections there may be.

Pure cores (no I/O, clocks passed in):
  * `HostPolicy`: the Host names this server answers to. Always 127.0.0.1, localhost and [::1]
    on the port the connection arrived on, plus `--allow-host` entries (`name` for any port,
    `name:port`, `*` for every name). With access control on and no `--allow-host`, every
    name: tokens guard a public server, and a page on a rebinding domain holds no token. An
    unknown or missing Host is refused (400 bad-request) before any route runs, WebSocket
    upgrades included, so the Origin checks below (and ws.py's) compare with a known Host.
  * `state_change_refusal`: a request that changes state (every method but GET, HEAD and
    OPTIONS) must (1) say `Content-Type: application/json`, except a DELETE without a body,
    and (2) come from this server's own pages: an `Origin`, when sent, is the server's own
    origin (or an `--allow-origin` one) and a `Sec-Fetch-Site`, when sent, is `same-origin`.
    A request with neither header comes from no browser (browsers send `Origin` with every
    cross-origin POST and every CORS request, and `Sec-Fetch-Site` with every request) and
    passes: a script needs no token on a personal instance, and rule (1) already keeps out
    what a foreign page can send without a CORS preflight (forms, no-cors fetches), while
    collab grants no preflight.
  * `RateBuckets`: token buckets by key; a take needs a token from every key's bucket (`limit_writes`,
    for fork, restore, rename and naming a checkpoint: the token's and the client address's). Memory is bounded (full buckets are dropped).
  * `HeadWatch`: whether the bytes of a connection so far hold a complete request head.
  * `FloodFilter`: a logging filter letting one line of a kind through per interval, without its
    traceback, with the count of those it held back.

Adapters: `middleware` (Host, state changes, and the request body read under a deadline),
`limit_writes` and `refusal_headers` (429 with Retry-After; a body that cannot be read ends its connection), `Listener` (the protocol factory `collab serve` listens with: the connection cap and the
head deadline), `raise_open_file_limit`.

Rules: every refusal of a request is a `ProtocolError`, answered by api.py's error_middleware; a
request aiohttp's parser refuses never reaches it, and is answered by `_Handler` in the same shape. The
`Listener`'s two come before there is a request, so they are plain-text answers written to the
socket, which then closes (`BUSY`, 503, over the connection cap; `TOO_SLOW`, 408, a head past its
deadline), as docs/protocol.md says. The head deadline covers the first request of a connection,
aiohttp's keepalive_timeout (set to the same value by `collab serve`) every later one; nothing here
knows about documents.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .access import origin_allowed, token_digest
from .errors import CODES, ProtocolError, brief
from .settings import Settings, entries
from .ws import allowed_origins, client_address, own_origin, trusted_proxies

log = logging.getLogger("collab")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})


# ------------------------------------------------------------------ Host

def split_host(value: str) -> tuple[str, int | None]:
    """`name[:port]` or `[v6][:port]`, lowercased; raises ValueError when it is neither."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(value)
        name, rest = value[:end + 1], value[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(value)
        port = rest[1:] if rest else None
    else:
        name, _, port = value.partition(":")
        if not _:
            port = None
    if not name or any(c in name for c in "/@?#\\ \t"):
        raise ValueError(value)
    if port is not None:
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ValueError(value)
        return name, int(port)
    return name, None


@dataclass(frozen=True)
class HostPolicy:
    """The Host names served: loopback names on the connection's own port, plus `names`."""

    names: frozenset[tuple[str, int | None]] = frozenset()  # (name, None) matches any port
    any_host: bool = False

    @classmethod
    def parse(cls, allow_host: str, access_control: bool) -> "HostPolicy":
        """From `--allow-host` (comma-separated); raises ValueError naming a bad entry."""
        listed = entries(allow_host)
        if "*" in listed:
            return cls(any_host=True)
        names = set()
        for entry in listed:
            try:
                names.add(split_host(entry))
            except ValueError:
                raise ValueError(f"--allow-host: {entry!r} is not a host name, name:port or *") from None
        return cls(frozenset(names), any_host=access_control and not names)

    def allows(self, host: str | None, local_port: int | None, secure: bool) -> bool:
        if not host:  # HTTP/1.1 requires one (and aiohttp would look the machine's name up instead)
            return False
        if self.any_host:
            return True
        try:
            name, port = split_host(host)
        except ValueError:
            return False
        if port is None:
            port = 443 if secure else 80
        if name in LOOPBACK_NAMES and port == local_port:
            return True
        return (name, None) in self.names or (name, port) in self.names


# ---------------------------------------------------------- state changes

def state_change_refusal(method: str, content_type: str, has_body: bool, origin: str | None,
                         fetch_site: str | None, own: str, extra: frozenset[str]) -> ProtocolError | None:
    """Why a request may not change anything here (see the module's rules), or None."""
    if method in SAFE_METHODS:
        return None
    if origin is not None and not origin_allowed(origin, own, extra):
        return ProtocolError("forbidden", "requests from another site's pages may not change anything here")
    if fetch_site is not None and fetch_site.strip().lower() != "same-origin":
        return ProtocolError("forbidden", "requests from another site's pages may not change anything here "
                             f"(Sec-Fetch-Site: {brief(fetch_site)})")
    if content_type != "application/json" and (has_body or method != "DELETE"):
        return ProtocolError("bad-request", "a request that changes something must send its body as "
                             "Content-Type: application/json")
    return None


# ------------------------------------------------------------ rate limit

class RateBuckets:
    """Token buckets by key: `per_minute` takes a minute on average, `burst` at once; 0 per minute: no limit."""

    def __init__(self, per_minute: float, burst: int, max_keys: int = 10_000):
        self.rate = per_minute / 60.0
        self.burst = float(max(burst, 1))
        self.max_keys = max_keys
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)

    def _level(self, key: str, now: float) -> float:
        tokens, stamp = self.buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - stamp) * self.rate)

    def take(self, keys: Iterable[str], now: float) -> float:
        """0.0 when every key's bucket had a token (one is taken from each); else the seconds until
        all of them have one again (and nothing is taken)."""
        if self.rate <= 0:
            return 0.0
        levels = {key: self._level(key, now) for key in keys}
        short = max((1.0 - level for level in levels.values()), default=0.0)
        if short > 1e-9:
            return short / self.rate
        for key, level in levels.items():
            self.buckets[key] = (level - 1.0, now)
        if len(self.buckets) > self.max_keys:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        """Full buckets say nothing: drop them; if still too many, keep the most recently used half."""
        self.buckets = {k: v for k, v in self.buckets.items() if self._level(k, now) < self.burst}
        if len(self.buckets) > self.max_keys:
            recent = sorted(self.buckets.items(), key=lambda kv: kv[1][1])[-(self.max_keys // 2):]
            self.buckets = dict(recent)


# --------------------------------------------------------- request heads

class HeadWatch:
    """Fed a connection's first bytes: True once they hold a complete request head (up to the
    first CRLF CRLF; blank lines before the request line do not count, as HTTP allows them)."""

    __slots__ = ("tail", "started")

    def __init__(self) -> None:
        self.tail = b""
        self.started = False

    def feed(self, data: bytes) -> bool:
        if not self.started:
            data = data.lstrip(b"\r\n")
            if not data:
                return False
            self.started = True
        seen = self.tail + data
        if b"\r\n\r\n" in seen:
            return True
        self.tail = seen[-3:]
        return False


# ------------------------------------------------------------------ logs

class FloodFilter(logging.Filter):
    """One record per `interval` seconds for messages starting with one of `prefixes`, without its
    traceback (the exception's text is kept) and with the count held back since the last one."""

    def __init__(self, prefixes: tuple[str, ...], interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.prefixes, self.interval, self.clock = prefixes, interval, clock
        self.last: dict[str, float] = {}
        self.held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        template = record.msg if isinstance(record.msg, str) else ""  # a line starting with an argument
        kind = next((p for p in self.prefixes if message.startswith(p) or template.startswith(p)), None)
        if kind is None:
            return True
        now = self.clock()
        if now - self.last.get(kind, -math.inf) < self.interval:
            self.held[kind] = self.held.get(kind, 0) + 1
            return False
        self.last[kind] = now
        exc = record.exc_info[1] if record.exc_info else None
        held = self.held.pop(kind, 0)
        line = (message.splitlines()[0] if message else "") + (f": {exc}" if exc is not None else "")
        line = _TOKEN.sub(r"\1***", line)  # both parts may quote what a client sent: its token, a header of 8 KB
        if len(line) > MAX_FLOOD_LINE:
            line = line[:MAX_FLOOD_LINE] + "…"
        record.msg = line + (f" ({held} more like it in the last {self.interval:g} s not logged)" if held else "")
        record.args = ()
        record.exc_info = record.exc_text = None
        return True


MAX_FLOOD_LINE = 300  # characters of a flood's line that are logged (with the exception's text)
# An access token as a client may send it (`?token=`, an Authorization header), in what a flood's line quotes.
_TOKEN = re.compile(r"(token=|Authorization:\s*(?:[A-Za-z]+\s+)?|Bearer\s+)[^\s&'\"\\]+", re.IGNORECASE)

# Messages that come in floods when the server is attacked or out of file descriptors, or while PostgreSQL
# is down (asyncpg's pool retries its connections from 1 s to every 60 s, a traceback each time). A prefix
# matches the line or the template it was made from (aiohttp.websocket's starts with the client's address).
# aiohttp.websocket warns of every WebSocket upgrade offering only subprotocols other than collab.v1, quoting
# them (up to a header's 8 KB), before anything of collab's runs.
FLOODS = {"asyncio": ("socket.accept() out of system resource",),
          "aiohttp.server": ("Error handling request",),
          "aiohttp.websocket": ("%s: Client protocols",),
          "asyncpg.pool": ("Failed to restore the pool connection floor",)}


def install_flood_filters(interval: float = 60.0) -> None:
    for name, prefixes in FLOODS.items():
        logging.getLogger(name).addFilter(FloodFilter(prefixes, interval))


# -------------------------------------------------------------- adapters

RETRY_AFTER = web.RequestKey("retry_after", int)  # a refusal's Retry-After (limit_writes)
CUT_SHORT = web.RequestKey("cut_short", bool)      # a body that could not be read: the connection ends after the answer


def _local_port(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    return sock[1] if isinstance(sock, tuple) and len(sock) >= 2 else None


def middleware(settings: Settings, access_control: bool):
    """Host check for every request; the state-change rules; the body of a state change read now,
    within --header-timeout (a client trickling a body holds nothing for long)."""
    hosts = HostPolicy.parse(settings.allow_host, access_control)
    trusted = trusted_proxies(settings)
    extra = allowed_origins(settings)
    deadline = settings.header_timeout or None

    async def state_change(request: web.Request, handler):
        refusal = state_change_refusal(request.method, request.content_type, request.body_exists,
                                       request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"),
                                       own_origin(request, trusted), extra)
        if refusal is not None:
            raise refusal
        if request.body_exists:
            try:
                async with asyncio.timeout(deadline):
                    await request.read()  # kept by aiohttp: the handler reads it again
            except TimeoutError:
                raise ProtocolError("bad-request", f"the request body did not arrive within {deadline:g} s") \
                    from None
            except web.RequestPayloadError:
                # aiohttp's reader refused the bytes: most often a body its Content-Encoding does not
                # decode (garbage sent as gzip or deflate); a body cut short by the client, too.
                # Nothing more of it is read (aiohttp would try after the answer, and log the error as
                # unhandled), and the connection ends after the answer (`Connection: close`): its parser
                # stopped mid-body.
                request.content.feed_eof()
                request[CUT_SHORT] = True
                encoding = request.headers.get("Content-Encoding")
                how = f" as its Content-Encoding ({brief(encoding)}) says" if encoding else ""
                raise ProtocolError("bad-request", f"the request body could not be read{how}") from None
        return await handler(request)

    @web.middleware
    def guard(request: web.Request, handler):
        # Not a coroutine: a safe request's handler is handed on as it is (a WebSocket's lives as long as
        # its connection, and a coroutine of ours around it would too).
        host = request.headers.get("Host")
        if not hosts.allows(host, _local_port(request), request.secure):
            raise ProtocolError("bad-request", f"this server does not answer to the host name {brief(host)} "
                                "(see --allow-host)")
        if request.method not in SAFE_METHODS:
            return state_change(request, handler)
        return handler(request)

    return guard


def origin_check(settings: Settings) -> Callable[[web.Request], bool]:
    """Whether a WebSocket request comes from no page or from one of this server's (for /status/ws)."""
    trusted, extra = trusted_proxies(settings), allowed_origins(settings)
    return lambda request: origin_allowed(request.headers.get("Origin"), own_origin(request, trusted), extra)


WRITE_LIMITER = web.AppKey("write_limiter", RateBuckets)


def write_limiter(settings: Settings) -> RateBuckets:
    return RateBuckets(settings.write_rate, settings.write_burst)


def limit_writes(request: web.Request, token: str | None) -> None:
    """Take from the request's token's and address's buckets; 429 rate-limited with Retry-After if empty."""
    settings = request.app[SETTINGS_KEY]
    keys = ["addr " + client_address(request, trusted_proxies(settings))]
    if token:  # 10,000 keys at most, each of a fixed size
        keys.append("token " + token_digest(token))
    wait = request.app[WRITE_LIMITER].take(keys, time.monotonic())
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        request[RETRY_AFTER] = seconds
        raise ProtocolError("rate-limited", f"too many forks, restores, renames and checkpoint names (--write-rate "
                            f"{settings.write_rate:g} a minute, --write-burst {settings.write_burst}); "
                            f"try again in {seconds} s")


async def refusal_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: a refusal made by `limit_writes` says when to come back; the answer to a
    body that could not be read closes the connection."""
    if not isinstance(request, web.Request):
        return
    seconds = request.get(RETRY_AFTER)
    if seconds is not None:
        response.headers["Retry-After"] = str(seconds)
    if request.get(CUT_SHORT):
        # The connection ends after this answer, and the answer says so (aiohttp has chosen its
        # Connection header by the time this hook runs, though not yet sent).
        response.force_close()
        response.headers["Connection"] = "close"


SETTINGS_KEY = web.AppKey("guard_settings", Settings)


def install(app: web.Application, settings: Settings) -> None:
    """What the adapters above need from the app (create_app calls this)."""
    app[SETTINGS_KEY] = settings
    app[WRITE_LIMITER] = write_limiter(settings)
    app.on_response_prepare.append(refusal_headers)


# ------------------------------------------------------------ listening

def _plain_answer(status: str, text: str, *extra: str) -> bytes:
    body = text.encode() + b"\r\n"
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain", f"Content-Length: {len(body)}", *extra,
            "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


BUSY = _plain_answer("503 Service Unavailable", "the server has too many connections", "Retry-After: 5")
TOO_SLOW = _plain_answer("408 Request Timeout", "the request head took too long")


MAX_PARSER_MESSAGE = 200  # characters of aiohttp's words about a request it could not parse (they quote it)


class _Handler(RequestHandler):
    """aiohttp's connection handler (`Listener` makes each of its connections one), answering what it answers
    by itself in the one error shape: a request its HTTP parser refuses (a malformed request line or header,
    an HTTP/1.1 request with no Host or two, ...: 400 `bad-request`) and a failure outside every route
    (500 `internal`), which aiohttp answers in plain text. It logs them as aiohttp does (its "Error handling
    request" lines, held to one a minute by the flood filter) and closes the connection after the answer."""

    __slots__ = ()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)  # logs; raises if an answer went out
        if status == 400:
            code, message = "bad-request", message or "the request could not be parsed"
            if len(message) > MAX_PARSER_MESSAGE:
                message = message[:MAX_PARSER_MESSAGE] + "…"
        elif status == 500:
            code, message = "internal", "internal server error"
        else:
            return response
        from .api import SECURITY_HEADERS, error_response  # (api imports this module)
        response = error_response(CODES[code].http, code, message)
        response.headers.update(SECURITY_HEADERS)
        response.force_close()
        return response


class Listener:
    """The protocol factory `collab serve` listens with, around aiohttp's `web.Server` (itself a
    protocol factory): at most `max_connections` open (more are answered 503 and closed), and a
    connection whose first request head is not complete `head_timeout` seconds after it was
    accepted (after the TLS handshake) is answered 408 and closed. 0 turns either off."""

    def __init__(self, server: Callable[[], asyncio.Protocol], head_timeout: float, max_connections: int):
        self.server = server
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        self.open = 0
        self.refused = 0   # over the cap
        self.timed_out = 0  # head too slow

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)


class _Connection(asyncio.Protocol):
    """Forwards everything to aiohttp's RequestHandler, made only when the connection is admitted (`inner`;
    ws.Connection takes its place when it takes a WebSocket over from aiohttp's request)."""

    __slots__ = ("listener", "inner", "transport", "watch", "timer", "counted")

    def __init__(self, listener: Listener):
        self.listener = listener
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.watch: HeadWatch | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        lst = self.listener
        if lst.max_connections and lst.open >= lst.max_connections:
            lst.refused += 1
            transport.write(BUSY)
            transport.close()
            return
        lst.open += 1
        self.counted = True
        if lst.head_timeout:
            self.watch = HeadWatch()
            self.timer = asyncio.get_running_loop().call_later(lst.head_timeout, self._too_slow)
        self.inner = lst.server()
        if type(self.inner) is RequestHandler:
            self.inner.__class__ = _Handler  # (aiohttp's Server makes them; the same slots, one method more)
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.listener.timed_out += 1
            self.transport.write(TOO_SLOW)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.timer is not None and self.watch.feed(data):
            self.timer.cancel()
            self.timer = self.watch = None
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.counted:
            self.counted = False
            self.listener.open -= 1
        inner, self.inner, self.transport = self.inner, None, None
        if inner is not None:
            inner.connection_lost(exc)


FILES_BESIDES_CONNECTIONS = 64  # the database, its WAL, logs, the listening sockets, ...


def raise_open_file_limit(max_connections: int) -> int:
    """Raise this process's soft open-file limit towards what `max_connections` needs (up to the hard
    limit); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + FILES_BESIDES_CONNECTIONS
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    return soft
