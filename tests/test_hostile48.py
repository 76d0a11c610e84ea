"""Hostile and malformed HTTP requests answered wrongly (audit 48): each test failed before its fix.

Real servers only: the app in-process (aiohttp's test client) where the route's answer is what matters,
a `collab serve` subprocess (raw sockets) where what aiohttp does before any route runs matters.
"""

from __future__ import annotations

import orjson
import pytest

from collab.app import create_app
from collab.settings import Settings


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(Settings(db=str(tmp_path / "h.db"), write_rate=0, min_free_disk=0)))


def error_of(body: bytes) -> dict:
    data = orjson.loads(body)
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message"}, data
    return data["error"]


# ------------------------------------------------------- /static/ folders

@pytest.mark.parametrize("path", ["/static/", "/static"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_the_static_folder_itself_is_not_found_not_forbidden(client, method, path):
    """Was: `GET /static/` answered 403 `forbidden` (aiohttp's static route lists no folder), a code that
    says the token does not give access; every other address without a file there is 404 `not-found`."""
    resp = await client.request(method, path)
    assert resp.status == 404, (resp.status, await resp.text())
    if method == "GET":
        assert error_of(await resp.read())["code"] == "not-found"
    assert (await client.get("/static/style.css")).status == 200  # the files are still served


# ------------------------------------------------------------------ 405

@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/api/docs/x", {"GET", "HEAD", "DELETE"}),
    ("DELETE", "/api/docs/x/history", {"GET", "HEAD"}),
    ("PATCH", "/api/docs", {"GET", "HEAD", "POST"}),
    ("POST", "/healthz", {"GET", "HEAD"}),
])
async def test_a_method_a_path_does_not_take_is_405_naming_those_it_takes(client, method, path, allow):
    """RFC 9110 (15.5.6): a 405 MUST carry `Allow`. Was: aiohttp's 405 said it, but the answer in the one
    error shape, made anew from the code and message, left it out."""
    resp = await client.request(method, path, json={})
    assert resp.status == 405 and error_of(await resp.read())["code"] == "bad-request"
    assert {m.strip() for m in resp.headers.get("Allow", "").split(",") if m.strip()} == allow, resp.headers
