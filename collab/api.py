"""HTTP routes: pages, the document API, health. JSON in and out; one error shape.

Every error leaves through `error_answer` (called by `error_middleware`, and
by ws.handle for a WebSocket refused before its upgrade) as
`{"error": {"code", "message"}}` with the status the protocol gives the code
(or, to a person following a link to a page, as a short HTML page with the
same status, code and message), whatever raised it (a CollabError: a
ProtocolError or a ServerError; an aiohttp HTTP exception; or a bug, which is
logged with its traceback and answered as 500 `internal`).
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import secrets
from pathlib import Path

import orjson
from aiohttp import web

from . import httpguard, protocol
from .errors import CollabError, ProtocolError, ServerError, brief
from .logs import Throttle
from .room import Rooms
from .storage import PERSON_KEY, Storage, TooManyCheckpoints, VersionCompacted

log = logging.getLogger("collab")

_HTTP_CODES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "bad-request", 409: "conflict", 413: "too-large", 429: "rate-limited", 503: "unavailable"}


def json_response(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


_ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · collab</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/style.css"></head>
<body class="landing error-page"><header class="bar"><span class="brand">collab</span></header>
<main class="page"><h1>{title}</h1><p class="error-next">{next}</p>
<p class="note">The server said: {message} ({status} {code})</p></main></body></html>
"""
_PAGE_TITLES = {401: "This link needs an access token", 403: "This link does not give access here",
                404: "Nothing here", 400: "Bad address", 429: "Too many requests"}
_PAGE_NEXT = {  # what the person can do next; plain text (escaped)
    401: "Open the document with the link you were given: it ends in ?token=…. "
         "If you run this server, open its admin link (collab printed it when it started).",
    403: "This link may have been revoked (when a document's links are reset, the old ones stop working), "
         "or it belongs to another document. Ask the person who shared it for a new link.",
    404: "Check the address. Documents are at /d/ and their name; the link you were given opens yours.",
    400: "Check the address: a document name is 1 to 100 letters, digits, '-' or '_'.",
    429: "Wait a moment, then reload the page.",
}
_NEXT_LATER = "Reload the page in a moment. If it goes on, tell the person who runs this server."


def _is_page(request: web.Request) -> bool:
    """A person's browser asking for a page: the pages, and any GET outside /api/ and /static/ that accepts HTML."""
    if request.method not in ("GET", "HEAD"):
        return False
    path = request.path
    if path == "/" or path.startswith("/d/"):
        return True
    return not path.startswith(("/api/", "/static/", "/ws/")) and "text/html" in request.headers.get("Accept", "")


def error_answer(errors_counter=None):
    """`answer(request, exc)`: the one place an error becomes `{"error": {code, message}}` (counted by
    code), or a short HTML page for a person following a link to a page. `exc` is a CollabError, an
    aiohttp HTTPException of status 400 or more (others are re-raised), or anything else: a bug, logged
    and answered 500 `internal`."""

    def answer(request: web.Request, exc: BaseException) -> web.Response:
        if isinstance(exc, CollabError):
            status, code, message = exc.status, exc.code, exc.message
        elif isinstance(exc, web.HTTPException):
            if exc.status < 400:
                raise exc
            status = exc.status
            code = _HTTP_CODES.get(status, "internal" if status >= 500 else "bad-request")
            message = exc.reason or code
        else:
            log.error("error in %s %s", request.method, request.path, exc_info=exc)
            status, code, message = 500, "internal", "internal server error"
        if errors_counter is not None:
            errors_counter.labels(code).inc()
        if _is_page(request):
            title = _PAGE_TITLES.get(status, "Something went wrong")
            response = web.Response(status=status, content_type="text/html", text=_ERROR_PAGE.format(
                title=html.escape(title), message=html.escape(message), status=status, code=html.escape(code),
                next=html.escape(_PAGE_NEXT.get(status, _NEXT_LATER))))
        else:
            response = error_response(status, code, message)
        if isinstance(exc, web.HTTPException) and "Allow" in exc.headers:  # a 405 names the methods taken
            response.headers["Allow"] = exc.headers["Allow"]
        return response

    return answer


def error_middleware(answer, sockets: str = "/ws/"):
    """Every error of a request is answered by `answer` (error_answer).

    But for a WebSocket under `sockets`: its handler's coroutine is handed to aiohttp as it is, not
    awaited in one of ours, which would live (about 300 bytes) as long as the connection. Its refusals
    before the upgrade are answered by the handler itself (ws.handle, with the same `answer`); the
    ones of the middlewares after this one (the guard's, which check synchronously) are caught here.
    """

    async def answered(request: web.Request, handler):
        try:
            response = await handler(request)
            if type(response) is web.FileResponse and (path := _static_file(request)) is not None and \
                    not await asyncio.get_running_loop().run_in_executor(None, path.is_file):
                raise web.HTTPNotFound()  # (its FileResponse would send a 404 of its own, with an empty body)
            return response
        except web.HTTPForbidden as exc:
            # aiohttp's static route forbids a folder (it lists none): to a visitor that is no file, as for
            # any other address without one, not a refusal of their token (`forbidden`)
            return answer(request, web.HTTPNotFound() if _static_file(request) is not None else exc)
        except Exception as exc:  # noqa: BLE001 - every error gets the one shape (a bug: 500, logged)
            return answer(request, exc)

    @web.middleware
    def middleware(request: web.Request, handler):
        if not request.path.startswith(sockets) or getattr(request.match_info, "http_exception", None) is not None:
            return answered(request, handler)  # (an address under `sockets` no route takes: a 404 of ours)
        try:
            return handler(request)
        except Exception as exc:  # noqa: BLE001 - as in answered()
            return _ready(answer(request, exc))

    return middleware


def _static_file(request: web.Request) -> Path | None:
    """The file aiohttp's static route answers this request with (the route has kept the name inside
    its folder already); None for any other route."""
    resource = request.match_info.route.resource
    directory = resource.get_info().get("directory") if resource is not None else None
    filename = request.match_info.get("filename")
    return directory / filename if directory is not None and filename is not None else None


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    return response


_ADJECTIVES = ("amber", "brisk", "calm", "clever", "crisp", "gentle", "golden", "happy", "lucky", "mellow",
               "merry", "nimble", "quiet", "rapid", "silver", "sunny", "swift", "tidy", "vivid", "witty")
_NOUNS = ("badger", "brook", "cedar", "comet", "falcon", "fern", "harbor", "lantern", "maple", "meadow",
          "otter", "pebble", "river", "robin", "sparrow", "spruce", "summit", "thistle", "willow", "wren")


def readable_name() -> str:
    """A random document name people can read out loud, like 'quiet-otter-42'."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.randbelow(90) + 10}"


FAR = 10 ** 18  # past every version a database can hold (a signed 64-bit integer), yet stored and compared as one


def _int_param(raw, what: str, default: int | None, low: int, high: int | None,
               beyond: str = "the latest version") -> int:
    """A non-negative integer within [low, high]; 400 bad-request otherwise.

    `raw` is a query-string or path value (str, digits only) or a JSON value
    (which must be a JSON integer: "1" in a body is refused).
    """
    if raw is None:
        if default is None:
            raise ProtocolError("bad-request", f"{what} is required")
        return default
    if isinstance(raw, _Text):
        if not (raw.isascii() and raw.isdigit()):
            raise ProtocolError("bad-request", f"{what} must be a non-negative integer, got {brief(str(raw))}")
        digits = raw.lstrip("0") or "0"  # (int() refuses more than 4,300 digits, zeros included)
        if len(digits) > 18:  # past every version (the text is not made into a number: it may be long)
            if high is None:
                return FAR  # an open bound (history's `before`): as far as any number goes
            raise ProtocolError("bad-request", f"{what} {brief(str(raw))} is beyond {beyond} {high}")
        raw = int(digits)
    if type(raw) is float and raw.is_integer() and raw >= 2 ** 64:  # a JSON integer past 64 bits, read as a float
        if high is None:
            return FAR
        raise ProtocolError("bad-request", f"{what} (a number over 64 bits) is beyond {beyond} {high}")
    if type(raw) is not int:
        raise ProtocolError("bad-request", f"{what} must be a non-negative integer, got {brief(raw)}")
    if raw < low:
        raise ProtocolError("bad-request", f"{what} must be at least {low}, got {raw}")
    if high is not None and raw > high:
        raise ProtocolError("bad-request", f"{what} {raw} is beyond {beyond} {high}")
    return raw


class _Text(str):
    """Marks a value that came from the URL (so digits in a string are a number)."""


def _still_there(request: web.Request):
    """Whether the client of `request` still waits for its answer (its connection is open): a GET that
    waits in a line for a costly rebuild asks it when its turn comes (Rooms.text_at)."""
    return lambda: request.transport is not None and not request.transport.is_closing()


def _query(request: web.Request, key: str):
    value = request.query.get(key)
    return None if value is None else _Text(value)


async def _json_body(request: web.Request) -> dict:
    data = await request.read()
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            data.decode()
        except UnicodeDecodeError as bad:
            raise ProtocolError("bad-json", f"the request body is not UTF-8 (byte {bad.start})") from None
        raise ProtocolError("bad-json", f"the request body is not JSON: {exc}") from None
    if type(body) is not dict:
        raise ProtocolError("bad-request", "the request body must be a JSON object")
    return body


def _author(body: dict) -> str:
    who = body.get("author", "someone")
    if type(who) is not str or len(who) > protocol.MAX_NAME:
        raise ProtocolError("bad-request", f"author must be a string of at most {protocol.MAX_NAME} characters")
    return protocol.clean_name(who, "someone")


def _person_color(body: dict) -> tuple[str | None, str | None]:
    """The optional "person" and "color" of a restore or fork (as in hello), checked."""
    person, color = body.get("person"), body.get("color")
    if person is not None and (type(person) is not str or not protocol.valid_person(person)):
        raise ProtocolError("bad-request", "person must be 1-64 letters, digits, '-' or '_'")
    if color is not None and (type(color) is not str or not protocol.valid_color(color)):
        raise ProtocolError("bad-request", "color must be a hex colour like #3366ff")
    return person, color


def doc_name(request: web.Request) -> str:
    return protocol.doc_name(request.match_info["doc"])


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer but a WebSocket's 101, as it is prepared: no sniffing, no referrer (tokens live in
    URLs), no framing, scripts from us only.

    A signal handler rather than a middleware, whose coroutine would stay for
    as long as each WebSocket connection lasts (about 350 bytes each). The 101
    goes without them: nothing renders it, and its headers are kept as long
    as the connection (four more cost about 1 KB per connection).
    """
    if response.status == 101:
        return
    h = response.headers
    for name, value in SECURITY_HEADERS.items():
        h.setdefault(name, value)


def token_of(request: web.Request) -> str | None:
    """The access token: `?token=` (links, WebSockets) or `Authorization: Bearer` (scripts)."""
    token = request.query.get("token")
    if token:
        return token
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


LIMITS_PLACEHOLDER = "<!--collab:limits-->"
MAX_HISTORY_PAGE = 1000  # entries one /history page holds at most
_HASHED = re.compile(r"[A-Za-z0-9_]+-[A-Z0-9]{8}\.(?:js|css)")  # static/build.mjs: name-HASH.ext
IMMUTABLE = "public, max-age=31536000, immutable"


async def static_headers(request: web.Request, response: web.StreamResponse) -> None:
    """/static/ answers: a hashed name never changes, so browsers keep it a year; other names are revalidated.

    aiohttp's FileResponse sends the build's .br or .gz copy to a browser that
    takes it (Content-Encoding); Vary: Accept-Encoding goes on every script
    and stylesheet, compressed or not, so no cache hands one browser's
    variant to another.
    """
    if not request.path.startswith("/static/") or response.status not in (200, 304):
        return
    name = request.path.rsplit("/", 1)[-1]
    response.headers["Cache-Control"] = IMMUTABLE if _HASHED.fullmatch(name) else "no-cache"
    if name.endswith((".js", ".css")) and "Accept-Encoding" not in response.headers.get("Vary", ""):
        response.headers.add("Vary", "Accept-Encoding")


_EXPORTS = {"txt": "text/plain", "md": "text/markdown"}


class Api:
    """The HTTP routes. Documents are reached through `Rooms` (open ones live in memory) and the store."""

    def __init__(self, store: Storage, rooms: Rooms, static_dir: Path):
        self.store = store
        self.rooms = rooms
        self.access = rooms.access
        self.static_dir = Path(static_dir)
        self._health_warnings = Throttle(log)  # a load balancer asks every few seconds: not a line each time

    async def allow(self, request: web.Request, need: str, doc: str | None = None) -> str:
        """Check the request's token for `need` access (to `doc`); returns the role it grants.

        Checked before anything is looked up, so a token that gives no access
        learns nothing, not even whether a document of that name exists (a
        missing document has no salt, so only the admin token passes).
        """
        salt = await self.rooms.salt_of(doc) if doc is not None and self.access.enabled else None
        return self.access.require(token_of(request), need, doc, salt)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.index_page),
            web.get("/d/{doc}", self.editor_page),
            web.get("/api/docs", self.list_docs),
            web.post("/api/docs", self.create_doc),
            web.get("/api/docs/{doc}", self.get_doc),
            web.delete("/api/docs/{doc}", self.delete_doc),
            web.get("/api/docs/{doc}/links", self.links),
            web.post("/api/docs/{doc}/links/reset", self.reset_links),
            web.get("/api/docs/{doc}/history", self.history),
            web.get("/api/docs/{doc}/versions/{version}", self.version_text),
            web.post("/api/docs/{doc}/restore", self.restore),
            web.post("/api/docs/{doc}/fork", self.fork),
            web.get("/api/docs/{doc}/authors", self.authors),
            web.get("/api/docs/{doc}/export", self.export),
            web.post("/api/docs/{doc}/rename", self.rename),
            web.get("/api/docs/{doc}/checkpoints", self.checkpoints),
            web.get("/api/docs/{doc}/former-names", self.former_names),
            web.post("/api/docs/{doc}/checkpoints", self.set_checkpoint),
            web.get("/healthz", self.healthz),
        ]

    # ----------------------------------------------------------------- pages

    def _page(self, filename: str, fill: str = "") -> web.StreamResponse:
        """A page as static/build.mjs wrote it to dist/ (naming hashed files); `fill` goes at LIMITS_PLACEHOLDER."""
        path = self.static_dir / "dist" / filename
        if not path.is_file():  # the operator learns where from the log; a visitor learns no path of ours
            log.error("%s is missing: build the editor (cd static && node build.mjs)", path)
            raise ProtocolError("not-found", f"this server's editor page (dist/{filename}) is missing")
        access = f'<meta name="collab-access" content="{"tokens" if self.access.enabled else "open"}">'
        html = path.read_text(encoding="utf-8").replace(LIMITS_PLACEHOLDER, access + fill, 1)
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})

    async def page_access(self, request: web.Request, need: str, doc: str | None = None) -> None:
        """A page is a shell: all it shows comes from the API and the WebSocket, which check the token.

        So a page without `?token=` is served: the admin's tab keeps the admin
        token out of the address bar (static/src/auth.js) and sends it in
        headers, and a person without a token reads on the page how to get in.
        A token in the address is checked, so a wrong or revoked link gets an
        error page that says so.
        """
        if request.query.get("token"):
            await self.allow(request, need, doc)

    async def index_page(self, request: web.Request) -> web.StreamResponse:
        await self.page_access(request, "admin")
        return self._page("index.html")

    async def editor_page(self, request: web.Request) -> web.StreamResponse:
        name = doc_name(request)
        moved = await self._renamed(request, name)
        if moved is not None:
            raise web.HTTPFound(moved)
        await self.page_access(request, "view", name)  # a new document: only the admin may make it (at hello)
        # The editor refuses, as the person makes it, an edit this server could
        # never take (a frame over --max-frame, a document over --max-doc), and
        # splits its pushes under --max-updates; the welcome frame repeats these.
        limits = "".join(f'<meta name="collab-{key}" content="{value}">' for key, value in (
            ("max-frame", self.rooms.limits["maxFrame"]), ("max-doc", self.rooms.limits["maxDoc"]),
            ("max-updates", self.rooms.limits["maxUpdates"]), ("max-ranges", self.rooms.limits["maxRanges"])))
        return self._page("editor.html", fill=limits)

    # ------------------------------------------------------------------- API

    async def list_docs(self, request: web.Request) -> web.Response:
        await self.allow(request, "admin")
        docs = await self.store.list_documents()
        return json_response({"docs": [{"name": d["name"], "version": d["version"], "updated": d["updated"],
                                        "length": d["length"]} for d in docs]})

    async def _doc(self, request: web.Request, need: str) -> dict:
        """The document the route names, after checking the token for `need` access to it."""
        name = doc_name(request)
        await self.allow(request, need, name)
        return self._still_allowed(request, need, await self.rooms.info(name))

    def _still_allowed(self, request: web.Request, need: str, info: dict) -> dict:
        """`info`, the row read after `allow`: the token is checked again against its salt, so a document
        deleted and made again under the name in between (another salt) is not read with the old one's
        token. Returns `info`."""
        if self.access.enabled:
            self.access.require(token_of(request), need, info["name"], info["salt"])
        return info

    async def get_doc(self, request: web.Request) -> web.Response:
        name = doc_name(request)
        await self.allow(request, "view", name)
        version, text = await self.rooms.current(name)
        await self.allow(request, "view", name)  # still: not if the name's document was made again meanwhile
        return json_response({"name": name, "version": version, "doc": text})

    # --------------------------------------------------------------- history

    async def history(self, request: web.Request) -> web.Response:
        name = doc_name(request)
        role = await self.allow(request, "view", name)
        info = self._still_allowed(request, "view", await self.rooms.info(name))
        before = _int_param(_query(request, "before"), "before", info["version"] + 1, 0, None)
        limit = _int_param(_query(request, "limit"), "limit", 100, 1, MAX_HISTORY_PAGE,
                           beyond="the most entries one page holds,")
        entries = await self.store.history(info["id"], before, limit)
        if role == "view":  # a view link never learns anyone's clientID (it would let it pose as them)
            for entry in entries:
                entry["clientID"] = self.rooms.hide(entry["clientID"])
        return json_response({"entries": entries})

    async def version_text(self, request: web.Request) -> web.Response:
        info = await self._doc(request, "view")
        version = _int_param(_Text(request.match_info["version"]), "version", None, 0, info["version"])
        text = await self.rooms.text_at(info, version, wanted=_still_there(request))
        await self.allow(request, "view", info["name"])  # still, after a rebuild that may have taken a while
        return json_response({"version": version, "doc": text})

    async def export(self, request: web.Request) -> web.Response:
        """The text at a version as a download: `format=txt` (default) or `md` (the same text, as Markdown)."""
        info = await self._doc(request, "view")
        version = _int_param(_query(request, "version"), "version", info["version"], 0, info["version"])
        kind = request.query.get("format", "txt")
        if kind not in _EXPORTS:
            raise ProtocolError("bad-request", f"format must be one of {', '.join(_EXPORTS)}, got {brief(kind)}")
        text = await self.rooms.text_at(info, version, wanted=_still_there(request))
        await self.allow(request, "view", info["name"])  # still, after a rebuild that may have taken a while
        return web.Response(text=text, content_type=_EXPORTS[kind], charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="{info["name"]}-v{version}.{kind}"'})

    async def rename(self, request: web.Request) -> web.Response:
        """A new name for the document (admin): share links made before keep working, redirected (see _renamed)."""
        info = await self._doc(request, "admin")
        httpguard.limit_writes(request, token_of(request))
        body = await _json_body(request)
        new_name = body.get("name")
        if type(new_name) is not str or not protocol.valid_doc_name(new_name):
            raise ProtocolError("bad-request", "name must be 1-100 letters, digits, '-' or '_'")
        await self.rooms.rename(info["name"], new_name)
        return json_response({"name": new_name, **await self._links(new_name)})

    async def _renamed(self, request: web.Request, name: str) -> str | None:
        """Where a link to a renamed document goes now: its new address, with a token for the same role
        under the new name when the old link's token was good for the old one (None: not renamed, or
        no token to check with access control on). A token good for neither is refused (forbidden)."""
        if await self.store.document(name) is not None:
            return None
        new = await self.store.renamed_to(name)
        if new is None:
            return None
        if not self.access.enabled:
            return f"/d/{new}"
        # A page's token is the one in its address, as page_access reads it: a header is not looked at
        # (a bad one, refused here, would tell a former name from any other name, which is served).
        token = request.query.get("token")
        if not token:  # the new name is told only to a token good for the old one: the page is served as is
            return None  # (an admin's tab, its token kept out of the address, hears it at its hello)
        salt = await self.rooms.salt_of(new)
        role = self.access.role(token, name, salt)  # the old link's token, as it was for the old name
        if role == "admin":
            return f"/d/{new}"
        return f"/d/{new}?token={self.access.doc_token(new, role, salt)}"

    async def former_names(self, request: web.Request) -> web.Response:
        """The names the document had before its renames (the editor adopts edits kept under them)."""
        info = await self._doc(request, "view")
        return json_response({"names": [{"name": name, "until": until}
                                        for name, until in await self.store.former_names(info["id"])]})

    async def checkpoints(self, request: web.Request) -> web.Response:
        info = await self._doc(request, "view")
        return json_response({"checkpoints": await self.store.checkpoints(info["id"])})

    async def set_checkpoint(self, request: web.Request) -> web.Response:
        """Name a version {"version", "name"} (a checkpoint in the history); "name": null takes it away."""
        info = await self._doc(request, "edit")
        httpguard.limit_writes(request, token_of(request))
        if not self.rooms.disk.ok():
            raise ServerError("the server's disk is nearly full, so nothing can be saved for now")
        body = await _json_body(request)
        version = _int_param(body.get("version"), "version", None, 0, info["version"])
        if "name" not in body:  # a typo ({"nam": ...}) must not take a name away: only an explicit null does
            raise ProtocolError("bad-request", "name is required: a string names the version, null takes its "
                                "name away")
        label = body["name"]
        if label is not None:
            if type(label) is not str or len(label) > protocol.MAX_NAME:
                raise ProtocolError("bad-request", f"name must be a string of at most {protocol.MAX_NAME} "
                                    "characters, or null")
            label = protocol.clean_name(label, "")
            if not label:  # only `null` takes a name away
                raise ProtocolError("bad-request", "name must have a visible character (null takes the name away)")
        try:
            await self.store.set_checkpoint(info["id"], version, label, _author(body),
                                            max_checkpoints=self.rooms.settings.max_checkpoints or None)
        except TooManyCheckpoints as exc:
            raise ProtocolError("too-large", str(exc)) from None
        except VersionCompacted as exc:  # naming it would promise a version nobody can open
            raise ProtocolError("not-found", str(exc)) from None
        self.rooms.checkpoint_named(info["name"], info["id"], version)
        return json_response({"checkpoints": await self.store.checkpoints(info["id"])})

    async def authors(self, request: web.Request) -> web.Response:
        info = await self._doc(request, "view")
        version = _int_param(_query(request, "version"), "version", info["version"], 0, info["version"])
        from . import compute  # replay and JSON are built off the event loop
        try:
            authorship = await self.store.authorship(info["id"], version, wanted=_still_there(request))
        except VersionCompacted as exc:
            raise ProtocolError("not-found", f"authorship: {exc}") from None
        spans = await compute.authors_json(authorship)
        await self.allow(request, "view", info["name"])  # still, after a replay that may have taken a while
        # A span's author is a name, or PERSON_KEY and a person id; people gives those their latest name and colour.
        people = {PERSON_KEY + person: who for person, who in (await self.store.people(info["id"])).items()}
        return web.Response(body=b'{"version":%d,"spans":%s,"people":%s}' % (version, spans, orjson.dumps(people)),
                            content_type="application/json")

    async def restore(self, request: web.Request) -> web.Response:
        """One ordinary update turning the current text into the text at `version` (a minimal diff)."""
        info = await self._doc(request, "edit")
        name, token = info["name"], token_of(request)
        httpguard.limit_writes(request, token)
        body = await _json_body(request)
        version = _int_param(body.get("version"), "version", None, 0, info["version"])
        person, color = _person_color(body)
        # The token is checked again when the diff is ready: a link reset meanwhile refuses the restore.
        new_version, made = await self.rooms.restore(name, version, _author(body), person, color,
                                                     authorize=lambda salt: self.access.require(token, "edit", name, salt))
        return json_response({"version": new_version, "unchanged": not made})

    async def fork(self, request: web.Request) -> web.Response:
        """A new document from a version of this one: creating, so the admin's (like POST /api/docs)."""
        info = await self._doc(request, "admin")
        httpguard.limit_writes(request, token_of(request))
        name = info["name"]
        body = await _json_body(request)
        version = _int_param(body.get("version"), "version", info["version"], 0, info["version"])
        new_name = await self._new_name(body)
        person, color = _person_color(body)
        text = await self.rooms.text_at(info, version)
        await self.rooms.create(new_name, text, author=_author(body), client_id=f"fork-{name}-{version}",
                                person=person, color=color)
        return json_response({"name": new_name, **await self._links(new_name)}, status=201)

    # ---------------------------------------------------- access management

    async def _links(self, name: str, salt: str | None = None) -> dict:
        """Share links of a document (only when access control is on), signed with `salt` or its salt now
        (not-found if it was deleted since the caller made, renamed or reset it)."""
        if not self.access.enabled:
            return {}
        if salt is None:
            salt = await self.rooms.salt_of(name)
        if salt is None:
            raise ProtocolError("not-found", f"no document named {name!r}")
        return {"links": {role: f"/d/{name}?token={self.access.doc_token(name, role, salt)}"
                          for role in ("edit", "view")}}

    async def links(self, request: web.Request) -> web.Response:
        """The share links, for a token that may edit: signed with the salt the token was checked against,
        read once (read again, it could be a document's made under the name since this one was deleted)."""
        name = doc_name(request)
        if not self.access.enabled:
            await self.rooms.info(name)
            return json_response({"links": None})
        salt = await self.rooms.salt_of(name)
        self.access.require(token_of(request), "edit", name, salt)
        return json_response(await self._links(name, salt))

    async def reset_links(self, request: web.Request) -> web.Response:
        """New salt: every old edit and view link stops working; their sessions are closed (1008). The admin's."""
        info = await self._doc(request, "admin")
        await self.rooms.reset_links(info["name"])
        return json_response(await self._links(info["name"]) or {"links": None})

    async def create_doc(self, request: web.Request) -> web.Response:
        await self.allow(request, "admin")
        name = await self._new_name(await _json_body(request))
        await self.rooms.create(name)
        return json_response({"name": name, **await self._links(name)}, status=201)

    async def delete_doc(self, request: web.Request) -> web.Response:
        info = await self._doc(request, "admin")
        await self.rooms.delete(info["name"])
        return json_response({"deleted": info["name"]})

    async def _new_name(self, body: dict) -> str:
        """The body's "name" for a new document (409 conflict if taken), or a fresh readable one."""
        name = body.get("name")
        if name is None:
            return await self._free_name()
        if type(name) is not str or not protocol.valid_doc_name(name):
            raise ProtocolError("bad-request", "name must be 1-100 letters, digits, '-' or '_'")
        if await self.store.document(name) is not None:
            raise ProtocolError("conflict", f"a document named {name!r} already exists")
        return name

    async def _free_name(self) -> str:
        for _ in range(20):
            candidate = readable_name()
            if await self.store.document(candidate) is None:
                return candidate
        return secrets.token_hex(8)

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.store.ping()
        except Exception as exc:
            self._health_warnings.warning("health check: the database cannot take a write: %s", exc)
            raise ServerError("the database cannot take a write right now") from None
        return json_response({"ok": True, "documents_open": self.rooms.open_count()})
