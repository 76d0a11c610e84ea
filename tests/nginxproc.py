"""A real nginx in the foreground for the deployment and cluster tests: one site, everything under a prefix.

`NginxProcess(prefix, site)` writes `prefix/nginx.conf` around the site (the
documented config with the test's ports substituted), checks it with
`nginx -t`, starts nginx with `daemon off` and waits until it listens. It is
stopped by its own pid (SIGQUIT: graceful), never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

NGINX = "/usr/sbin/nginx"


class NginxProcess:
    """A foreground nginx (master + `workers` workers) serving `site`, with everything under `prefix`."""

    def __init__(self, prefix: Path, site: str, workers: int = 1, connections: int = 256, http_extra: str = ""):
        self.prefix = Path(prefix)
        for sub in ("tmp", "logs"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        (self.prefix / "collab.conf").write_text(site)
        temp = "\n".join(f"    {kind}_temp_path {self.prefix}/tmp/{kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        extra = f"    {http_extra}\n" if http_extra else ""
        (self.prefix / "nginx.conf").write_text(f"""
{"user root root;" if os.geteuid() == 0 else ""}
worker_processes {workers};
daemon off;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/logs/error.log info;
events {{ worker_connections {connections}; }}
http {{
    access_log {self.prefix}/logs/access.log;
{temp}
{extra}    include {self.prefix}/collab.conf;
}}
""")
        self.proc: subprocess.Popen | None = None
        self._out = None

    def command(self, *extra: str) -> list[str]:
        return [NGINX, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-e",
                str(self.prefix / "logs" / "error.log"), *extra]

    def start(self, port: int, timeout: float = 15.0):
        """Check the config, start nginx and wait until `port` accepts connections (RuntimeError otherwise,
        with nginx's logs)."""
        if not os.path.exists(NGINX):
            raise RuntimeError(f"{NGINX} is missing: these tests run the documented config under a real nginx "
                               "(Debian: apt-get install nginx)")
        check = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refuses the config:\n{check.stderr}")
        self._out = open(self.prefix / "logs" / "stdout.log", "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.errors()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {port} within {timeout}s:\n{self.errors()}")

    def errors(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in (self.prefix / "logs").glob("*.log"))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._out:
            self._out.close()
            self._out = None
