"""HTTP routes: pages, the document API, health. JSON in and out; one error shape.

Every error leaves through `error_middleware` as
`{"error": {"code", "message"}}` with the status the protocol gives the code,
whatever raised it (a ProtocolError, an aiohttp HTTP exception, or a bug,
which is logged with its traceback and answered as 500 `internal`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
from aiohttp import web

from . import protocol
from .errors import HTTP_STATUS, ProtocolError
from .room import Rooms
from .store import Store

log = logging.getLogger("collab")

_HTTP_CODES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "bad-request", 413: "too-large", 429: "rate-limited"}


def json_response(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ProtocolError as exc:
        return error_response(HTTP_STATUS.get(exc.code, 400), exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "internal" if exc.status >= 500 else "bad-request")
        return error_response(exc.status, code, exc.reason or code)
    except Exception:
        log.exception("error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal server error")


def doc_name(request: web.Request) -> str:
    name = request.match_info["doc"]
    if not protocol.valid_doc_name(name):
        raise ProtocolError("bad-request", "document names are 1-100 letters, digits, '-' or '_'")
    return name


class Api:
    def __init__(self, store: Store, rooms: Rooms, static_dir: Path):
        self.store = store
        self.rooms = rooms
        self.static_dir = Path(static_dir)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.index_page),
            web.get("/d/{doc}", self.editor_page),
            web.get("/api/docs", self.list_docs),
            web.get("/api/docs/{doc}", self.get_doc),
            web.get("/healthz", self.healthz),
        ]

    # ----------------------------------------------------------------- pages

    def _page(self, filename: str) -> web.StreamResponse:
        path = self.static_dir / filename
        if not path.is_file():
            raise ProtocolError("not-found", f"{filename} is missing from {self.static_dir}")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def index_page(self, request: web.Request) -> web.StreamResponse:
        return self._page("index.html")

    async def editor_page(self, request: web.Request) -> web.StreamResponse:
        doc_name(request)
        return self._page("editor.html")

    # ------------------------------------------------------------------- API

    async def list_docs(self, request: web.Request) -> web.Response:
        docs = await self.store.list_documents()
        return json_response({"docs": [{"name": d["name"], "version": d["version"], "updated": d["updated"],
                                        "length": d["length"]} for d in docs]})

    async def current(self, name: str) -> tuple[int, str]:
        """(version, text) of a document: from memory when it is open, else from disk."""
        room = self.rooms.rooms.get(name)
        if room is not None and not room.broken:
            return room.seq.committed_version, room.seq.committed_text()
        info = await self.store.document(name)
        if info is None:
            raise ProtocolError("not-found", f"no document named {name!r}")
        return info["version"], await self.store.text_at(info["id"], info["version"])

    async def get_doc(self, request: web.Request) -> web.Response:
        name = doc_name(request)
        version, text = await self.current(name)
        return json_response({"name": name, "version": version, "doc": text})

    async def healthz(self, request: web.Request) -> web.Response:
        await self.store.ping()
        return json_response({"ok": True, "documents_open": len(self.rooms.rooms)})
