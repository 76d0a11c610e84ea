"""Smaller things (issue 14, item 10): compressed, long-cached files; the search panel; no fold gutter.

The bundle reaches Chromium compressed (Content-Encoding, Vary:
Accept-Encoding) under a hashed name cached for a year; the pages and the
unhashed stylesheet are revalidated. Real requests with each encoding get
the same bytes back once decoded. The search panel wears the app's style,
and wrapped paragraphs carry no fold chevrons.
"""

from __future__ import annotations

import gzip
import re
import urllib.request

from .browser_helpers import open_editor

IMMUTABLE = "public, max-age=31536000, immutable"


def get(url: str, encoding: str | None):
    headers = {"Accept-Encoding": encoding} if encoding else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return r.status, dict(r.headers), r.read()


def test_bundle_is_compressed_and_cached(server, contexts):
    ctx = contexts()
    responses = []
    ctx.on("response", lambda r: responses.append(r))
    page = open_editor(ctx, server.url, "static")
    page.click(".cm-content")
    page.keyboard.type("hello")

    by_name = {r.url.rsplit("/", 1)[-1]: r for r in responses if "/static/" in r.url}
    bundle = next(n for n in by_name if re.fullmatch(r"editor-[A-Z0-9]{8}\.js", n))
    headers = by_name[bundle].all_headers()
    assert headers["content-encoding"] in ("gzip", "br"), headers
    assert "accept-encoding" in headers["vary"].lower()
    assert headers["cache-control"] == IMMUTABLE
    css = next(n for n in by_name if re.fullmatch(r"style-[A-Z0-9]{8}\.css", n))
    assert by_name[css].all_headers()["cache-control"] == IMMUTABLE
    page_response = next(r for r in responses if r.url == f"{server.url}/d/static")
    assert page_response.all_headers()["cache-control"] == "no-cache"

    url = f"{server.url}/static/{bundle}"
    status, plain_headers, plain = get(url, None)
    assert status == 200 and "content-encoding" not in {k.lower() for k in plain_headers}
    assert "Accept-Encoding" in plain_headers["Vary"] and plain_headers["Cache-Control"] == IMMUTABLE
    assert len(plain) > 100_000
    _, gz_headers, gz = get(url, "gzip")
    assert gz_headers["Content-Encoding"] == "gzip" and gzip.decompress(gz) == plain
    assert len(gz) < len(plain) / 2.5
    _, br_headers, br = get(url, "br, gzip")
    assert br_headers["Content-Encoding"] == "br" and len(br) < len(gz)
    try:
        import brotli  # not a dependency: check the bytes when it is there
    except ImportError:
        brotli = None
    if brotli is not None:
        assert brotli.decompress(br) == plain
    # The plain stylesheet (for the server's error pages) is revalidated, not kept.
    _, css_headers, _ = get(f"{server.url}/static/style.css", "gzip")
    assert css_headers["Cache-Control"] == "no-cache" and css_headers["Content-Encoding"] == "gzip"

    # The search panel is styled like the app (no stock gradients), and there is no fold gutter.
    page.keyboard.press("Control+f")
    page.wait_for_selector(".cm-search .cm-textfield")
    button = page.eval_on_selector(".cm-search .cm-button", "e => getComputedStyle(e).backgroundImage")
    assert button == "none"
    radius = page.eval_on_selector(".cm-search .cm-textfield", "e => getComputedStyle(e).borderRadius")
    assert radius == "6px"
    assert page.query_selector(".cm-foldGutter") is None
    assert page.collab_errors == [] and page.csp_violations == []
