"""create_app(settings): wiring only. Store, rooms and metrics live in AppKeys; the
store opens and closes in a cleanup context; shutdown flushes every pending
commit and closes clients with 1001 before the store closes."""

from __future__ import annotations

import functools
from pathlib import Path

from aiohttp import web

from . import compute, httpguard, resources, status, ws
from .access import Access
from .cluster import Cluster
from .api import Api, error_answer, error_middleware, security_headers, static_headers, token_of
from .limits import DiskGuard
from .metrics import Metrics
from .room import Rooms
from .settings import Settings
from .storage import Storage, is_postgres, store_for

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Storage)
ROOMS = web.AppKey("rooms", Rooms)
METRICS = web.AppKey("metrics", Metrics)
ADMISSION = web.AppKey("admission", ws.Admission)


def create_app(settings: Settings) -> web.Application:
    metrics = Metrics()
    # The guard runs inside error_middleware, so its refusals get the one error shape.
    guard = httpguard.middleware(settings, access_control=settings.load_secret() is not None)
    answer = error_answer(metrics.errors)
    app = web.Application(middlewares=[error_middleware(answer), guard],
                          client_max_size=settings.max_frame)
    app[SETTINGS] = settings
    httpguard.install(app, settings)
    store = store_for(settings, exclusive=True)  # SQLite file or PostgreSQL URL (storage.py)
    # The free-disk guard watches the SQLite file's filesystem (a PostgreSQL server watches its own).
    disk = DiskGuard(None if is_postgres(settings.db) else Path(settings.db).resolve().parent, settings.min_free_disk)
    rooms = Rooms(settings, store, metrics, Access(settings.load_secret()), disk=disk)
    admission = ws.Admission(settings, rooms)
    compute.configure(settings.history_workers, settings.history_queue, settings.history_memory,
                      settings.history_timeout, settings.authors_max_runs)
    if is_postgres(settings.db):  # a shared database: other processes may serve the same documents
        rooms.cluster = Cluster(rooms, settings.redis, settings.check_every, settings.poll_every,
                                settings.presence_republish, settings.presence_expiry)
    app[STORE] = store
    app[ROOMS] = rooms
    app[METRICS] = metrics
    app[ADMISSION] = admission

    async def storage(app: web.Application):
        await store.open()
        if rooms.cluster is not None:
            await rooms.cluster.start()
        yield
        if rooms.cluster is not None:
            await rooms.cluster.stop()
        await store.close()

    async def on_shutdown(app: web.Application) -> None:
        await rooms.shutdown()
        await admission.shutdown()  # the WebSockets ws.Connection took over from aiohttp: their handshakes

    app.cleanup_ctx.append(storage)
    app.on_shutdown.append(on_shutdown)
    static = Path(settings.static_dir) if settings.static_dir else resources.static_dir()
    api = Api(store, rooms, static)
    app.router.add_routes(api.routes())
    # A partial, not a wrapper coroutine: that one's frame would live as long as each connection.
    # GET only (no HEAD: a WebSocket is opened by a GET, RFC 6455): any other method is the router's 405.
    app.router.add_get("/ws/{doc}", functools.partial(ws.handle, settings=settings, rooms=rooms, admission=admission,
                                                      answer=answer), allow_head=False)
    app.router.add_routes(status.routes(metrics, lambda request: rooms.access.require(token_of(request), "admin"),
                                        heartbeat=settings.heartbeat, origin_ok=httpguard.origin_check(settings),
                                        max_sockets=settings.max_status_conns))
    app.router.add_static("/static", static / "dist")  # the build's .br/.gz copies go to browsers that take them
    app.on_response_prepare.append(security_headers)  # on every answer (errors too) but a WebSocket's 101
    app.on_response_prepare.append(static_headers)  # hashed names cached for a year, Vary: Accept-Encoding
    return app
