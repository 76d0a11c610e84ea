"""Found by a chaos campaign (SIGKILLs, Redis and PostgreSQL restarts under stock clients): what a
crash-and-reconnect storm shows that the other tests did not.

Each test pins one finding down in-process, on the real code path, without waiting on the clock.
"""

from __future__ import annotations

import logging

import aiohttp
import pytest

from collab import ws
from collab.app import ADMISSION, create_app
from collab.settings import Settings
from wsutil import join


async def test_a_client_gone_during_its_websocket_upgrade_is_not_logged_as_a_server_error(
        aiohttp_client, tmp_path, monkeypatch, caplog):
    """Was: a client that hung up while its upgrade was being answered (a reconnecting client giving up
    on a process busy starting, a handshake timeout) made `ws.prepare` raise ClientConnectionResetError,
    which ws.handle handed to the error answer as a bug: an ERROR "error in GET /ws/doc" with its
    traceback in the log, and a 500 `internal` counted. Nobody is left to answer: it is let go quietly,
    and its place in the per-address count is given back."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "t.db"), unload_after=60)))
    admission = client.server.app[ADMISSION]
    prepare = ws.Socket.prepare

    async def hung_up_first(self, request):
        request.transport.close()  # the client's close arrived just before the 101 went out
        return await prepare(self, request)

    monkeypatch.setattr(ws.Socket, "prepare", hung_up_first)
    with caplog.at_level(logging.WARNING, logger="collab"):
        with pytest.raises(aiohttp.ClientError):
            await client.ws_connect("/ws/doc", protocols=["collab.v1"])
        monkeypatch.undo()
        other, welcome = await join(client, "doc", "next")  # the server goes on as before
        assert admission.per_address == {"127.0.0.1": 1}, "only the open connection counts"
        await other.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert welcome["version"] == 0
