"""The deployment as documented: docs/nginx-collab.conf under a real nginx, TLS both ways, the systemd unit.

nginx runs in the foreground as a child of the test, with its own prefix,
pid and logs under tmp_path, listening on random 127.0.0.1 ports; its site
is docs/nginx-collab.conf itself with only ports and certificate paths
substituted (each substitution must match exactly once, so the test breaks
instead of silently testing something else when the file changes). A
self-signed certificate made with openssl is trusted by the clients
(NODE_EXTRA_CA_CERTS for Node, an SSL context for Python), so TLS is
verified, not switched off.
"""

from __future__ import annotations

import asyncio
import http.client as httpclient
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from conftest import JS_DIR
from nginxproc import NginxProcess
from serverproc import ROOT, ServerProcess, free_port, get_json

DOCS = ROOT / "docs"
PROXY_ADDRESS = "127.0.0.2"  # nginx connects to collab from here, so forwarded addresses are visible


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("openssl is not installed: these tests need it for a self-signed certificate "
                    "(Debian: apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert,
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def tls_client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


SITE_LOG = "/var/log/nginx/collab.access.log"


def site_config(backend_port: int, http_port: int, https_port: int, cert: Path, key: Path, logs: Path,
                webroot: Path | None = None) -> str:
    """docs/nginx-collab.conf with our ports, certificate, log folder and certbot's webroot (`webroot`, else
    `logs`); each line substituted must occur exactly once, the site's access log once in each of its two
    server blocks."""
    text = (DOCS / "nginx-collab.conf").read_text()
    assert text.count(f"access_log {SITE_LOG} ") == 2, f"both server blocks should log to {SITE_LOG}"
    text = text.replace(SITE_LOG, str(logs / "collab.access.log"))
    for old, new in [
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("listen [::]:443 ssl;", ""),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{backend_port};"),
        ("ssl_certificate     /etc/letsencrypt/live/collab.example.com/fullchain.pem;", f"ssl_certificate {cert};"),
        ("ssl_certificate_key /etc/letsencrypt/live/collab.example.com/privkey.pem;", f"ssl_certificate_key {key};"),
        ("root /var/www/html;", f"root {webroot or logs};"),
    ]:
        lines = [line for line in text.splitlines() if line.strip() == old]
        assert len(lines) == 1, f"docs/nginx-collab.conf should have the line {old!r} exactly once"
        text = text.replace(lines[0], lines[0].replace(old, new))
    return text


def nginx(prefix: Path, site: str) -> NginxProcess:
    """A foreground nginx serving `site`; it connects to collab from PROXY_ADDRESS."""
    return NginxProcess(prefix, site, http_extra=f"proxy_bind {PROXY_ADDRESS};")


def fuzz(node: str, url: str, doc: str, cert: Path, seed: int) -> dict:
    """Two headless @codemirror/collab clients editing `doc` at `url` until they converge."""
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(cert))
    run = subprocess.run(
        [node, "client.mjs", "fuzz", "--url", url, "--doc", doc, "--clients", "2", "--duration", "2500",
         "--seed", str(seed), "--delay", "20", "--reconnects", "1", "--interval", "15,40", "--settle", "15000"],
        cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=45)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(run.stdout)
    problems = [x for c in r["clients"] for x in c["violations"] + [f"error {e}" for e in c["errors"]]]
    assert problems == [] and not r["conflicts"], problems[:10]
    assert r["ok"], f"no convergence: clients at {r['versions']}, server {r['server']}"
    assert r["texts"][0] == r["texts"][1] and r["totalLocalEdits"] > 50, r["totalLocalEdits"]
    for c in r["clients"]:
        assert c["stats"]["connects"] >= 2 and c["stats"]["ownAcked"] > 0, c  # edited, reconnected, resumed
    return r


async def hello_through(url: str, doc: str, origin: str | None, ctx: ssl.SSLContext):
    """Open a WebSocket like a browser page at `origin` would; the welcome, or the HTTP refusal status."""
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(f"{url}/ws/{doc}", protocols=("collab.v1",), headers=headers,
                                       ssl=ctx) as ws:
                await ws.send_json({"type": "hello", "clientID": "browser-like", "version": None,
                                    "user": {"name": "b", "color": "#000000"}})
                msg = await asyncio.wait_for(ws.receive(), 10)
                return json.loads(msg.data)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def test_two_editors_through_nginx_with_tls(tmp_path, node, certificate):
    cert, key = certificate
    http_port, https_port = free_port(), free_port()
    # The browser's Host is nginx's address, not collab's: named with --allow-host as the docs say.
    server = ServerProcess(tmp_path / "collab.db", extra_args=["--trusted-proxy", PROXY_ADDRESS,
                                                                "--allow-host", f"127.0.0.1:{https_port}"])
    webroot = tmp_path / "webroot"
    challenge = webroot / ".well-known" / "acme-challenge" / "token-1"
    challenge.parent.mkdir(parents=True)
    challenge.write_text("token-1.key")
    proxy = nginx(tmp_path / "nginx", site_config(server.port, http_port, https_port, cert, key,
                                                  tmp_path / "nginx" / "logs", webroot))
    try:
        server.start()
        proxy.start(https_port)
        ctx = tls_client_context(cert)
        front = f"https://127.0.0.1:{https_port}"

        # Pages and the API come through; port 80 redirects all but Let's Encrypt's challenges (certbot renew).
        with urllib.request.urlopen(f"{front}/healthz", context=ctx, timeout=10) as r:
            assert r.status == 200
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/d/notes")
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(req, timeout=10)
        assert redirect.value.code == 301 and redirect.value.headers["Location"] == "https://127.0.0.1/d/notes"
        with opener.open(f"http://127.0.0.1:{http_port}/.well-known/acme-challenge/token-1", timeout=10) as r:
            assert r.status == 200 and r.read() == b"token-1.key"

        first = asyncio.run(hello_through(f"wss://127.0.0.1:{https_port}", "through-nginx", None, ctx))
        assert isinstance(first, dict) and first["type"] == "welcome", f"no WebSocket through nginx: {first}"
        r = fuzz(node, f"wss://127.0.0.1:{https_port}", "through-nginx", cert, seed=3)
        served = get_json(f"{server.url}/api/docs/through-nginx")  # straight from collab, not via nginx
        assert served["doc"] == r["texts"][0] and served["version"] == r["versions"][0]

        # A browser page of this site may connect through the proxy (Host and X-Forwarded-Proto are
        # passed on, so collab recognises its own https origin); a page of another site may not.
        welcome = asyncio.run(hello_through(f"wss://127.0.0.1:{https_port}", "through-nginx",
                                            f"https://127.0.0.1:{https_port}", ctx))
        assert isinstance(welcome, dict) and welcome["type"] == "welcome", welcome
        assert welcome["doc"] == served["doc"]
        refused = asyncio.run(hello_through(f"wss://127.0.0.1:{https_port}", "through-nginx",
                                            "https://evil.example", ctx))
        assert refused == 403, refused

        # collab saw the clients' own address (from X-Forwarded-For, nginx being a trusted proxy),
        # not the proxy's.
        opens = [line for line in server.log().splitlines() if "through-nginx" in line and "open" in line]
        assert opens and all(re.search(r"addr\W+127\.0\.0\.1\b", line) for line in opens), opens[:5]
        assert not any(PROXY_ADDRESS in line for line in opens)
        assert "through-nginx" in (tmp_path / "nginx" / "logs" / "collab.access.log").read_text()
    finally:
        proxy.stop()
        server.kill()
    assert server.proc.returncode == -signal.SIGKILL, "collab ran to the end of the test"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_two_editors_over_wss_served_by_collab_itself(tmp_path, node, certificate):
    cert, key = certificate
    server = ServerProcess(tmp_path / "collab.db", extra_args=["--cert", str(cert), "--key", str(key)])
    ctx = tls_client_context(cert)
    try:
        _start_tls(server, ctx)
        assert f"collab: listening on https://127.0.0.1:{server.port}" in server.log()
        r = fuzz(node, f"wss://127.0.0.1:{server.port}", "direct-tls", cert, seed=4)
        with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/api/docs/direct-tls", context=ctx,
                                    timeout=10) as resp:
            served = json.loads(resp.read())
        assert (served["version"], served["doc"]) == (r["versions"][0], r["texts"][0])
        # Only TLS on that port: plain HTTP gets no answer.
        with pytest.raises((urllib.error.URLError, ConnectionError, httpclient.HTTPException)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5).read()
    finally:
        server.kill()


def _start_tls(server: ServerProcess, ctx: ssl.SSLContext, timeout: float = 20) -> None:
    """ServerProcess.start for a server that speaks only HTTPS: wait for /healthz over TLS."""
    server._log = open(server.log_path, "ab")
    server.proc = subprocess.Popen(
        [sys.executable, "-m", "collab", "serve", "--host", "127.0.0.1", "--port", str(server.port),
         "--db", str(server.db), *server.extra_args],
        cwd=ROOT, stdout=server._log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, f"server exited:\n{server.log()}"
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/healthz", context=ctx, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the TLS server did not become healthy:\n{server.log()}")


SECRET = "deploy test secret, long enough to sign"


def test_logs_hold_no_token(tmp_path, certificate):
    """Admin, edit and view tokens go through nginx in query strings; neither nginx's access log nor
    collab's output holds one (the site logs $uri, not $request)."""
    from collab.access import Access
    cert, key = certificate
    http_port, https_port = free_port(), free_port()
    server = ServerProcess(tmp_path / "collab.db", extra_args=[
        "--secret", SECRET, "--trusted-proxy", PROXY_ADDRESS, "--allow-host", f"127.0.0.1:{https_port}"])
    logs = tmp_path / "nginx" / "logs"
    proxy = nginx(tmp_path / "nginx", site_config(server.port, http_port, https_port, cert, key, logs))
    admin = Access(SECRET.encode()).admin_token()
    try:
        server.start()
        proxy.start(https_port)
        ctx = tls_client_context(cert)
        front = f"https://127.0.0.1:{https_port}"

        def call(path: str, body: dict | None = None) -> int:
            req = urllib.request.Request(front + path, data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"},
                                         method="GET" if body is None else "POST")
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                    r.read()
                    return r.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert call(f"/api/docs?token={admin}", {"name": "plans"}) == 201
        with urllib.request.urlopen(f"{front}/api/docs/plans/links?token={admin}", context=ctx, timeout=10) as r:
            links = json.loads(r.read())["links"]
        edit, view = (links[role].split("token=")[1] for role in ("edit", "view"))
        tokens = {"admin": admin, "edit": edit, "view": view}
        assert call(f"/?token={admin}") == 200
        assert call(f"/d/plans?token={edit}") == 200
        assert call(f"/d/plans?token={view}") == 200
        assert call(f"/api/docs/plans/history?token={view}") == 200
        assert call(f"/api/docs/plans/restore?token={edit}", {"version": 0}) == 200
        assert call(f"/api/docs/plans/restore?token={view}", {"version": 0}) == 403
        welcome = asyncio.run(hello_through(f"wss://127.0.0.1:{https_port}", f"plans?token={edit}", None, ctx))
        assert isinstance(welcome, dict) and welcome["type"] == "welcome", welcome
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:  # port 80 logs too
            opener.open(f"http://127.0.0.1:{http_port}/d/plans?token={view}", timeout=10)
        assert redirect.value.code == 301
    finally:
        proxy.stop()
        server.kill()
    access = (logs / "collab.access.log").read_text()
    for path in ("GET /d/plans", "POST /api/docs/plans/restore", "GET /ws/plans", "GET /api/docs/plans/links"):
        assert path in access, f"{path!r} is missing from the access log:\n{access}"
    logged = {"nginx's access log": access, "collab's output": server.log()}
    default_log = logs / "access.log"  # nginx.conf's own access_log: the site's replaces it
    logged["nginx.conf's access log"] = default_log.read_text() if default_log.exists() else ""
    for where, text in logged.items():
        assert "token=" not in text, where
        for role, token in tokens.items():
            assert token not in text, f"the {role} token is in {where}"


def test_admin_link_goes_to_a_private_file_and_only_to_a_terminal(tmp_path):
    from collab.access import Access
    secret = tmp_path / "data" / "secret"
    secret.parent.mkdir()
    secret.write_text(SECRET + "\n")
    link_file = secret.parent / "admin-link"
    link_file.write_text("stale")
    link_file.chmod(0o644)  # a file left with a looser mode is replaced, not reused
    admin = Access(SECRET.encode()).admin_token()
    server = ServerProcess(tmp_path / "collab.db", extra_args=["--secret-file", str(secret)])
    try:
        server.start()
        expected = f"http://127.0.0.1:{server.port}/?token={admin}"
        assert link_file.read_text() == expected + "\n"
        assert link_file.stat().st_mode & 0o777 == 0o600
        output = server.log()
        assert f"the admin link is in {link_file}" in output, output
        assert admin not in output  # stdout is a file here (as under systemd): no token in it
        with urllib.request.urlopen(expected, timeout=10) as r:
            assert r.status == 200
    finally:
        server.kill()

    # On a terminal, the link is printed as well.
    import pty
    port = free_port()
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "collab", "serve", "--port", str(port), "--db",
                             str(tmp_path / "tty.db"), "--secret-file", str(secret)],
                            cwd=ROOT, stdin=child_fd, stdout=child_fd, stderr=child_fd)
    os.close(child_fd)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"admin link: " not in seen or not seen.endswith(b"\n"):
            assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")
            try:
                seen += os.read(main_fd, 4096)
            except OSError:
                break
    finally:
        proc.kill()
        proc.wait(10)
        os.close(main_fd)
    assert f"admin link: http://127.0.0.1:{port}/?token={admin}".encode() in seen, seen


def test_bad_certificate_is_a_clear_startup_error(tmp_path):
    (tmp_path / "cert.pem").write_text("not a certificate")
    run = subprocess.run([sys.executable, "-m", "collab", "serve", "--port", str(free_port()),
                          "--db", str(tmp_path / "c.db"), "--cert", str(tmp_path / "cert.pem"),
                          "--key", str(tmp_path / "missing.pem")],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode != 0 and "cannot use --cert" in run.stderr, run.stderr


def test_systemd_unit_is_valid_and_uses_real_settings(tmp_path):
    from collab.settings import Settings
    unit = (DOCS / "collab.service").read_text()
    env = dict(re.findall(r"^Environment=(COLLAB_[A-Z_]+)=(.*)$", unit, re.M))
    known = {f"COLLAB_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert env and set(env) <= known, set(env) - known
    settings = Settings.from_env(env)  # the values parse and pass validation
    assert settings.trusted_proxy == "127.0.0.1" and settings.host == "127.0.0.1"
    (start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    assert start.split() == ["/opt/collab/.venv/bin/collab", "serve"], start  # the installed package's
    # The nginx site proxies to the address the unit listens on.
    assert f"server {settings.host}:{settings.port};" in (DOCS / "nginx-collab.conf").read_text()
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.fail("systemd-analyze is missing (Debian package systemd): it checks docs/collab.service")
    local = tmp_path / "collab.service"
    local.write_text(unit.replace("/opt/collab/.venv/bin/collab", str(Path(sys.executable).parent / "collab")))
    run = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "collab.service" not in run.stderr, run.stderr
