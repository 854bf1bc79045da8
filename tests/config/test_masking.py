"""Secrets: masked in dumps, never in a repr or an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from duixwatch import config as settings
from tests.config.support import (
    APP_ID,
    MINIMAL,
    SECRET,
    load,
    write,
)

# --------------------------------------------------------------------------- secrets


def test_mask_hides_every_key_and_is_json(tmp_path: Path) -> None:
    text = MINIMAL + 'duix:\n  base_url: "https://user:pw-zz@example.com:8443/x"\n'
    masked = settings.mask(load(tmp_path, text))
    dumped = json.dumps(masked)
    assert SECRET not in dumped
    assert "pw-zz" not in dumped
    assert masked["apps"][0]["app_key"] == "**********"
    assert masked["duix"]["base_url"] == "https://user:**********@example.com:8443/x"
    assert masked["server"] == {
        "listen": "0.0.0.0:9814",
        "web_config_file": None,
        "open_health_endpoints": True,
        "status_details": True,
        "max_connections": 512,
        "read_timeout_seconds": 5.0,
        "idle_timeout_seconds": 5.0,
    }


def test_a_loaded_config_never_shows_its_key(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    for text in (repr(cfg), str(cfg), repr(cfg.apps[0]), repr(cfg.apps[0].credentials)):
        assert SECRET not in text
    assert SECRET not in cfg.model_dump_json()


def _every_text(exc: BaseException) -> str:
    """The message, repr and errors of ``exc`` and of every exception chained to it."""
    texts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        texts += [str(current), repr(current), *getattr(current, "errors", [])]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


@pytest.mark.parametrize(
    "tail",
    [
        "    poll_interval_seconds: [1]\n",  # a pydantic error in the app holding the key
        "    app_key_file: also.key\n",  # both ways of giving a key
        "  - {app_id: 1, app_key: " + SECRET + ", nope: 1}\n",  # unknown key beside a key
        "    list_sessions: {" + SECRET + "\n",  # a YAML syntax error on a line with the key
        "  - app_id: " + SECRET + "\n    app_key: x\n",  # the key written as the app_id
        "  - app_id: 1\n    app_key: {a: " + SECRET + "}\n",  # a key of the wrong type
    ],
)
def test_no_error_ever_contains_a_key(tmp_path: Path, tail: str) -> None:
    (tmp_path / "also.key").write_text(SECRET)
    path = write(tmp_path, MINIMAL + tail)
    with pytest.raises(settings.ConfigFileError) as caught:
        settings.load_config(path, environ={})
    assert SECRET not in _every_text(caught.value)


def test_no_error_from_env_json_contains_a_key(tmp_path: Path) -> None:
    apps = json.dumps([{"app_id": APP_ID, "app_key": SECRET, "poll_interval_seconds": "x"}])
    with pytest.raises(settings.ConfigFileError) as caught:
        load(tmp_path, MINIMAL, DUIXWATCH_APPS=apps)
    assert SECRET not in _every_text(caught.value)
