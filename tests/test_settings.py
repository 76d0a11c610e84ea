"""Settings are data: each one documented, each parsed from flags and environment."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from collab.settings import Settings

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
    ({"COLLAB_SYNC": "sometimes"}, "sync must be one of"),
    ({"COLLAB_MAX_FRAME": "-1"}, "max_frame must not be negative"),
    ({"COLLAB_MAX_FRAME": "0"}, "max_frame must be at least 1024 bytes"),  # not "no limit"
    ({"COLLAB_LOG_JSON": "maybe"}, "COLLAB_LOG_JSON"),
])
def test_bad_values_fail_with_a_hint(environ, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(environ)
