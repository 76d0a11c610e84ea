"""Settings are data: each one documented, each parsed from flags and environment."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from collab.settings import Settings
from collab.ws import allowed_origins, trusted_proxies

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [f.name for f in fields(Settings)
               if f"`--{f.name.replace('_', '-')}`" not in readme or f"`COLLAB_{f.name.upper()}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"


def test_environment_and_flags():
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    args = parser.parse_args(["--port", "9001", "--log-json"])
    s = Settings.from_args(args, environ={"COLLAB_PORT": "7000", "COLLAB_MAX_FRAME": "5000",
                                          "COLLAB_SYNC": "full"})
    assert s.port == 9001           # the flag wins over the environment
    assert s.max_frame == 5000      # the environment wins over the default
    assert s.sync == "full"         # not the default, so the variable was read
    assert s.log_json is True
    assert s.host == "127.0.0.1"


@pytest.mark.parametrize("environ, message", [
    ({"COLLAB_PORT": "eighty"}, "COLLAB_PORT"),
    ({"COLLAB_SYNC": "sometimes"}, "COLLAB_SYNC must be one of"),
    ({"COLLAB_MAX_FRAME": "-1"}, "COLLAB_MAX_FRAME must not be negative"),
    ({"COLLAB_MAX_FRAME": "0"}, "COLLAB_MAX_FRAME must be at least 1024 bytes"),  # not "no limit"
    ({"COLLAB_LOG_JSON": "maybe"}, "COLLAB_LOG_JSON"),
])
def test_bad_values_fail_with_a_hint(environ, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(environ)


# Each of these breaks one rule of Settings.__post_init__; together they break every one.
BAD = [
    ({"check_every": 0}, "--check-every"),
    ({"poll_every": 0}, "--poll-every"),
    ({"history_timeout": float("nan")}, "--history-timeout must be a finite number"),
    ({"keep_history": -1}, "--keep-history must not be negative"),
    ({"sync": "sometimes"}, "--sync must be one of"),
    ({"port": 70000}, "--port must be 1-65535"),
    ({"snapshot_every": 0}, "--snapshot-every must be at least 1"),
    ({"max_frame": 100}, "--max-frame must be at least 1024"),
    ({"secret": "short"}, "--secret must be 16"),
    ({"rate": 0}, "--rate must be positive"),
    ({"update_burst": 10}, "--update-burst at least --max-updates"),
    ({"doc_update_rate": 0}, "--doc-update-rate must be positive"),
    ({"db": " "}, "--db must be"),
    ({"db": "mysql://u@h/x"}, "--db 'mysql://u@h/x': a mysql:// URL is no database"),
    ({"redis": "redis://127.0.0.1/0"}, "--redis is for several processes"),
    ({"db": "postgresql://h/x", "redis": "http://h"}, "--redis must be a redis://"),
    ({"presence_expiry": 1, "presence_republish": 2}, "--presence-expiry must be longer than --presence-republish"),
    ({"history_workers": 0}, "--history-workers must be at least 1"),
    ({"presence_batch": 0}, "--presence-batch must be at least 1"),
    ({"cert": "c.pem"}, "--cert and --key go together"),
    # Was: accepted, and then nobody could edit (--max-updates 0, --max-doc 0), show a cursor
    # (--max-ranges 0) or keep a connection (--send-buffer 10); a proxy given by network or name was never
    # matched, so every client behind it counted as the proxy's address; an origin without a scheme, or
    # with the default port browsers leave out, never matched an Origin header (found by a newcomer).
    ({"max_updates": 0, "update_burst": 0, "doc_update_burst": 0}, "--max-updates must be at least 1"),
    ({"max_ranges": 0}, "--max-ranges must be at least 1"),
    ({"max_doc": 0}, "--max-doc must be at least 1"),
    ({"send_buffer": 10}, "--send-buffer must be at least 1024 bytes"),
    ({"trusted_proxy": "127.0.0.1, notanip"}, "--trusted-proxy takes the IP address of each proxy, 'notanip'"),
    ({"trusted_proxy": "10.0.0.0/8"}, "'10.0.0.0/8' is none"),
    ({"allow_origin": "foo"}, "--allow-origin 'foo' is not an origin like https://host:port"),
    ({"allow_origin": "https://a.example/app"}, "must be scheme://host[:port] only"),
    ({"allow_origin": "https://[::1]:443"}, "write https://[::1]"),
    ({"allow_origin": "https://a.example:"}, "must be scheme://host[:port] only"),
    ({"allow_origin": "https://a.example?"}, "must be scheme://host[:port] only"),
    ({"trusted_proxy": "fe80::1%eth0"}, "'fe80::1%eth0' is none"),
    ({"trusted_proxy": "[::1]"}, "'[::1]' is none"),
]


def test_good_proxies_and_origins_pass():
    settings = Settings(trusted_proxy=" 127.0.0.1, ::1 ,fd00::1", allow_origin="https://a.example, http://b.example:8080/,"
                        "http://[::1]:3000,chrome-extension://abcdef,tauri://localhost",
                        max_updates=1, max_ranges=1, max_doc=1, send_buffer=1024)
    assert trusted_proxies(settings) == {"127.0.0.1", "::1", "fd00::1"}
    assert allowed_origins(settings) == {"https://a.example", "http://b.example:8080", "http://[::1]:3000",
                                         "chrome-extension://abcdef", "tauri://localhost"}


@pytest.mark.parametrize("values, words", BAD)
def test_a_refused_setting_is_named_by_its_flag_not_its_attribute(values, words):
    """Was: `--check-every 0` said "poll_every and check_every must be positive": names the user never types
    (found by an operator's audit)."""
    with pytest.raises(ValueError) as caught:
        Settings(**values)
    message = str(caught.value)
    assert words in message, message
    attributes = [f.name for f in fields(Settings) if "_" in f.name and f.name in message]
    assert not attributes, f"{message!r} names attributes {attributes}"


def test_a_refused_setting_from_the_environment_is_named_by_its_variable():
    """Was: COLLAB_REDIS in the environment (a cluster's env file) with a SQLite --db said "--redis is for
    several processes", naming a flag nobody gave."""
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    environ = {"COLLAB_REDIS": "redis://127.0.0.1:6379/0", "COLLAB_CHECK_EVERY": "0"}
    with pytest.raises(ValueError) as caught:
        Settings.from_args(parser.parse_args(["--db", "file.db", "--poll-every", "0"]), environ)
    message = str(caught.value)
    assert "COLLAB_REDIS is for several processes on one PostgreSQL database, and --db is a SQLite file" in message
    assert "--poll-every and COLLAB_CHECK_EVERY must be positive" in message, message
    with pytest.raises(ValueError, match="--redis is for several processes"):
        Settings.from_args(parser.parse_args(["--db", "file.db", "--redis", "redis://h/0"]), {})


@pytest.mark.parametrize("path", ["postgres-backups/collab@2024.db", "postgresql-export/db:1.sqlite", "Postgres:2024.db",
                                  "postgres.db", "data/collab.db", "/var/lib/collab/my collab.db", "~/collab.db"])
def test_a_sqlite_path_that_merely_starts_like_postgres_is_still_a_path(path):
    """The check for mistyped PostgreSQL URLs (postgresql:/u:p@h/db) refused any path starting with
    "postgres" with a : or an @ anywhere after it."""
    from collab.storage import not_a_database
    assert not_a_database(path) is None
    assert Settings(db=path).db == path


@pytest.mark.parametrize("url", ["postgresql:/u:pw@h/db", "postgres:u:pw@h/db", "POSTGRESQL//u@h/db", "postgres:/db"])
def test_a_mistyped_postgresql_url_is_refused(url):
    from collab.storage import not_a_database
    assert "is no PostgreSQL URL" in not_a_database(url) and "pw" not in not_a_database(url)
