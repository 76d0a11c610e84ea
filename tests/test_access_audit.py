"""An audit of access control and request guarding, as an attacker and an operator would probe it.

Each test is one finding: it failed on the code before its fix. In-process servers (aiohttp's test
client with `create_app`), never mocks.
"""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestServer

from collab.access import Access
from collab.app import ROOMS, STORE, create_app
from collab.settings import Settings

SECRET = "the access audit's secret, long enough"
ADMIN = Access(SECRET.encode()).admin_token()


def settings_for(tmp_path, **kw) -> Settings:
    return Settings(db=str(tmp_path / "audit.db"), unload_after=60, **kw)


async def docs_of(client, token=None) -> list[str]:
    resp = await client.get("/api/docs", headers={"Authorization": f"Bearer {token}"} if token else {})
    assert resp.status == 200, await resp.text()
    return sorted(d["name"] for d in (await resp.json())["docs"])


# ------------------------------------------ an Origin that is not a URL

# urlsplit raises ValueError on these (an unclosed or stray bracket, a bracketed host that is no address).
BROKEN_ORIGINS = ("http://[::1", "http://a]b", "http://[zz]:80")


@pytest.mark.parametrize("secret", [None, SECRET], ids=["personal", "team"])
async def test_an_origin_that_is_not_a_url_is_refused_as_foreign_not_a_server_error(aiohttp_client, tmp_path,
                                                                                   caplog, secret):
    """A page (or anyone) sending `Origin: http://[::1` got 500 `internal`, with a traceback logged for each
    request, on every state change, /ws/{doc} and /status/ws: the Origin parser raised. It is no origin of
    ours: 403 `forbidden`, and nothing is changed."""
    client = await aiohttp_client(create_app(settings_for(tmp_path, secret=secret)))
    auth = {"Authorization": f"Bearer {ADMIN}"} if secret else {}
    caplog.set_level(logging.INFO, logger="collab")
    for origin in BROKEN_ORIGINS:
        resp = await client.post("/api/docs", json={"name": "made"}, headers={**auth, "Origin": origin})
        assert resp.status == 403, (origin, resp.status, await resp.text())
        assert (await resp.json())["error"]["code"] == "forbidden"
        for path in ("/ws/doc", "/status/ws"):
            url = path + (f"?token={ADMIN}" if secret else "")
            with pytest.raises(WSServerHandshakeError) as refused:
                await client.ws_connect(url, protocols=["collab.v1"], headers={"Origin": origin})
            assert refused.value.status == 403, (origin, path)
    assert await docs_of(client, ADMIN if secret else None) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a refusal was logged as a server error"


# ------------------------------------- a trusted proxy named in another spelling

async def test_a_trusted_proxy_is_recognised_however_its_ipv6_address_is_spelled(tmp_path):
    """`--trusted-proxy 0:0:0:0:0:0:0:1` (or `FD00::1`, as an operator may copy it) never matched the
    socket's `::1`: the proxy's X-Forwarded-For was not believed, so every client behind it was the
    proxy's one address and the team shared one --max-conns-per-addr. Addresses are compared in the
    socket's spelling."""
    app = create_app(settings_for(tmp_path, trusted_proxy="0:0:0:0:0:0:0:1", max_conns_per_addr=1))
    server = TestServer(app, host="::1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://[::1]:{server.port}/ws/doc"
            first = await session.ws_connect(url, protocols=["collab.v1"], headers={"X-Forwarded-For": "10.0.0.1"})
            # Another client behind the same proxy is another address: it gets in.
            second = await session.ws_connect(url, protocols=["collab.v1"], headers={"X-Forwarded-For": "10.0.0.2"})
            # The same client again is over its cap: the header is believed, and read as the proxy wrote it.
            with pytest.raises(WSServerHandshakeError) as refused:
                await session.ws_connect(url, protocols=["collab.v1"],
                                         headers={"X-Forwarded-For": "forged, 10.0.0.1"})
            assert refused.value.status == 429
            await first.close()
            await second.close()
    finally:
        await server.close()


# ------------------------------------------ a forged token loads nothing

async def test_a_hello_with_a_token_that_gives_nothing_does_not_load_the_document(tmp_path, aiohttp_client):
    """Was: the document was loaded (its text rebuilt from the database into a room) before the hello's
    token was checked, so anyone who knew a name could make the server read that document, and read it
    again after every unload, with no token or a forged one. Now the token is checked first."""
    app = create_app(settings_for(tmp_path, secret=SECRET))
    client = await aiohttp_client(app)
    resp = await client.post("/api/docs", json={"name": "secret-doc"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 201
    rooms = app[ROOMS]
    assert "secret-doc" not in rooms.rooms  # made, not opened: nothing of it in memory
    for token in (None, "v" + "A" * 40):
        url = "/ws/secret-doc" + (f"?token={token}" if token else "")
        ws = await client.ws_connect(url, protocols=["collab.v1"])
        await ws.send_json({"type": "hello", "clientID": "x", "version": None})
        frame = await ws.receive_json(timeout=5)
        assert frame["type"] == "error" and frame["code"] in ("unauthorized", "forbidden"), frame
        await ws.close()
        assert "secret-doc" not in rooms.rooms, "the document was loaded for a token that gives nothing"


# ------------------------------------------ a link of a document deleted and made again meanwhile

@pytest.mark.parametrize("path, step", [("/api/docs/d/history", "info"), ("/api/docs/d/versions/0", "info"),
                                        ("/api/docs/d", "current")])
async def test_a_link_of_a_document_deleted_and_made_again_while_it_is_checked_reads_nothing(
        tmp_path, aiohttp_client, monkeypatch, path, step):
    """Was: a route checked the token against the salt it read for the name, then read the document by
    name again: a document deleted and made again under the name in between (another salt) was read
    with the old document's view link. Now the token is checked again against the row that was read."""
    from test_deleted_meanwhile import meanwhile
    app = create_app(settings_for(tmp_path, secret=SECRET))
    client = await aiohttp_client(app)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    made = await client.post("/api/docs", json={"name": "d"}, headers=admin)
    old_view = (await made.json())["links"]["view"].split("token=")[1]
    assert (await client.get(f"{path}?token={old_view}")).status == 200  # the link works, as it should

    async def delete_and_make_again():
        assert (await client.delete("/api/docs/d", headers=admin)).status == 200
        assert (await client.post("/api/docs", json={"name": "d"}, headers=admin)).status == 201

    meanwhile(monkeypatch, app[ROOMS], step, before=delete_and_make_again)
    resp = await client.get(f"{path}?token={old_view}")
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden", await resp.text()


@pytest.mark.parametrize("path, step", [("/api/docs/d/versions/1", "text_at"), ("/api/docs/d/export", "text_at"),
                                        ("/api/docs/d/authors", "authorship")])
async def test_a_link_reset_while_a_text_is_rebuilt_gets_nothing_of_it(tmp_path, aiohttp_client, monkeypatch,
                                                                      path, step):
    """Was: the token was checked before the text or the authorship was rebuilt, which may take seconds;
    a link reset meanwhile (a link that leaked, say) still got the text. Now it is checked again when
    the answer is made."""
    from test_deleted_meanwhile import meanwhile
    app = create_app(settings_for(tmp_path, secret=SECRET))
    client = await aiohttp_client(app)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    made = await client.post("/api/docs", json={"name": "d"}, headers=admin)
    view = (await made.json())["links"]["view"].split("token=")[1]
    ws = await client.ws_connect(f"/ws/d?token={ADMIN}", protocols=["collab.v1"])
    await ws.send_json({"type": "hello", "clientID": "w", "version": None})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    await ws.send_json({"type": "push", "version": 0, "updates": [{"clientID": "w", "changes": [[0, "secret"]]}]})
    assert (await ws.receive_json(timeout=5))["type"] == "updates"
    await ws.close()
    assert (await client.get(f"{path}?token={view}")).status == 200  # the link works, as it should

    async def reset():
        assert (await client.post("/api/docs/d/links/reset", json={}, headers=admin)).status == 200

    owner = app[ROOMS] if step == "text_at" else app[STORE]
    meanwhile(monkeypatch, owner, step, after=reset)
    resp = await client.get(f"{path}?token={view}")
    assert resp.status == 403 and "secret" not in await resp.text(), await resp.text()


async def test_a_missing_editor_build_names_no_path_of_the_server(tmp_path, aiohttp_client, caplog):
    """Was: with the editor's build missing, every visitor's 404 said where the server's files are."""
    static = tmp_path / "static"
    (static / "dist").mkdir(parents=True)
    client = await aiohttp_client(create_app(settings_for(tmp_path, static_dir=str(static))))
    with caplog.at_level(logging.ERROR, logger="collab"):
        resp = await client.get("/d/some-doc")
    assert resp.status == 404
    assert str(tmp_path) not in await resp.text()
    assert any(str(static) in r.getMessage() for r in caplog.records)  # the operator is told where
