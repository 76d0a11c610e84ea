"""Operations: /metrics counts exactly, /status shows it live, proxies are trusted only when configured."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from collab.app import create_app
from collab.settings import Settings
from collab.ws import client_address
from wsutil import closed, connect, join, push, recv, recv_type, send


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(Settings(db=str(tmp_path / "m.db"))))


async def scrape(client) -> dict:
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def value(values, name, **labels):
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_by_exactly_what_happened(client):
    before = await scrape(client)
    a, _ = await join(client, "m", "A")
    b, _ = await join(client, "m", "B")
    version = 0
    for k in range(7):
        await push(a, version, "A", ([version] if version else []) + [[0, "x"]])
        version = (await recv_type(a, "updates"))["from"] + 1
        await recv_type(b, "updates")
    await push(b, 0, "B", [[0, "y"]])  # made on version 0: rebased over 7 updates
    await recv_type(b, "updates")
    await recv_type(a, "updates")
    await send(a, "{broken")
    assert (await recv(a))["code"] == "bad-json"
    await push(a, 99, "A", [8, [0, "z"]])
    assert (await recv_type(a, "error"))["code"] == "bad-version"
    after = await scrape(client)
    assert value(after, "collab_updates_accepted_total") - value(before, "collab_updates_accepted_total") == 8
    assert value(after, "collab_connections") == 2
    assert value(after, "collab_documents_loaded") == 1
    assert value(after, "collab_protocol_errors_total", code="bad-json") == 1
    assert value(after, "collab_protocol_errors_total", code="bad-version") == 1
    assert value(after, "collab_rebase_distance_count") == 8
    assert value(after, "collab_rebase_distance_sum") == 7
    assert value(after, "collab_commit_batch_size_sum") == 8
    assert value(after, "collab_commit_seconds_count") >= 1
    assert value(after, "collab_broadcast_seconds_count") == value(after, "collab_commit_seconds_count")
    assert value(after, "collab_bytes_in_total") > 0 and value(after, "collab_bytes_out_total") > 0
    resp = await client.get("/api/docs/nothing-here")
    assert resp.status == 404
    assert value(await scrape(client), "collab_protocol_errors_total", code="not-found") == 1
    await a.close()
    await b.close()


async def test_commit_failures_are_there_at_zero_before_the_first(client):
    # README: "alert on this". A labelled counter had no sample before its first failure, so a scrape of a
    # healthy server had no collab_commit_failures_total at all (and rate() missed the first failure).
    values = await scrape(client)
    for reason in ("unavailable", "error"):
        assert ("collab_commit_failures_total", (("reason", reason),)) in values, sorted(values)
        assert value(values, "collab_commit_failures_total", reason=reason) == 0


async def test_status_page_streams_the_figures(client):
    resp = await client.get("/status")
    assert resp.status == 200 and "collab status" in await resp.text()
    assert (await client.get("/status.js")).status == 200
    ws = await client.ws_connect("/status/ws")
    first = await ws.receive_json(timeout=5)
    assert first["collab_connections"] == 0.0  # the status socket is not a document connection
    a, _ = await join(client, "s", "A")
    await push(a, 0, "A", [[0, "hi"]])
    await recv_type(a, "updates")
    for _ in range(5):
        figures = await ws.receive_json(timeout=5)
        if figures.get("collab_updates_accepted_total") == 1.0:
            break
    assert figures["collab_updates_accepted_total"] == 1.0
    await ws.close()


def fake_request(peer: str, forwarded: str | None):
    headers = CIMultiDict()
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return SimpleNamespace(transport=SimpleNamespace(get_extra_info=lambda k: (peer, 1234)), headers=headers)


@pytest.mark.parametrize("peer, forwarded, trusted, expected", [
    ("10.0.0.5", None, set(), "10.0.0.5"),
    ("10.0.0.5", "1.2.3.4", set(), "10.0.0.5"),                    # untrusted peer: header ignored
    ("127.0.0.1", "1.2.3.4", {"127.0.0.1"}, "1.2.3.4"),
    ("127.0.0.1", "6.6.6.6, 1.2.3.4", {"127.0.0.1"}, "1.2.3.4"),   # a forged first hop is ignored
    ("127.0.0.1", "1.2.3.4, 10.0.0.2", {"127.0.0.1", "10.0.0.2"}, "1.2.3.4"),
    ("127.0.0.1", None, {"127.0.0.1"}, "127.0.0.1"),
])
def test_forwarded_for_only_from_trusted_proxies(peer, forwarded, trusted, expected):
    assert client_address(fake_request(peer, forwarded), frozenset(trusted)) == expected


async def test_logs_have_connections_and_errors_but_no_text(client, caplog):
    import json
    import logging

    from collab.logs import JsonFormatter

    caplog.set_level(logging.INFO, logger="collab")
    a, _ = await join(client, "logs", "A")
    await push(a, 0, "A", [[0, "SECRET-TEXT"]])
    await recv_type(a, "updates")
    await push(a, 1, "A", [99, [0, "MORE-SECRET"]])
    assert (await recv_type(a, "error"))["code"] == "bad-changes"
    await a.close()
    for _ in range(50):
        if any("close doc=logs" in r.getMessage() for r in caplog.records):
            break
        await __import__("asyncio").sleep(0.02)
    messages = [r.getMessage() for r in caplog.records if r.name == "collab"]
    assert any(m.startswith("open doc=logs") for m in messages)
    assert any(m.startswith("close doc=logs") for m in messages)
    assert any("code=bad-changes" in m for m in messages)
    assert not any("SECRET" in m for m in messages)
    line = JsonFormatter().format(caplog.records[-1])
    assert set(json.loads(line)) >= {"time", "level", "logger", "message"}


async def test_the_close_line_gives_the_code_the_server_sent(client, caplog):
    """Was: the close line gave the client's answer (1000, or 1006 when it did not answer), so a takeover
    (4001) or a shutdown (1001) read as an ordinary or abnormal close in the logs."""
    import logging

    caplog.set_level(logging.INFO, logger="collab")
    old, welcome = await join(client, "takeover", "A")
    new = await connect(client, "takeover")
    await send(new, {"type": "hello", "clientID": "A", "version": None, "resumeKey": welcome["resumeKey"]})
    await recv_type(new, "welcome")
    assert (await closed(old))[0] == 4001
    line = f"close doc=takeover session={welcome['session']} code="
    for _ in range(100):
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(line)]
        if said:
            break
        await asyncio.sleep(0.02)
    assert said == [line + "4001"], said
