"""Helpers of the config tests: writing a file, loading it, reading its errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from duixwatch import config as settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "duixwatch.example.yaml"
#: A key distinctive enough that finding it anywhere in an error or repr is a leak.
SECRET = "zz-SECRET-appkey-7f3a9c-never-print-me"
APP_ID = "1377185422953811968"
OTHER_ID = "1377185422953811969"


def write(tmp_path: Path, text: str, name: str = "duixwatch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **environ: str) -> settings.Config:
    return settings.load_config(write(tmp_path, text), environ=environ)


def problems(tmp_path: Path, text: str, **environ: str) -> list[str]:
    """The error lines of a config that must fail, with the file name shortened to F."""
    path = write(tmp_path, text)
    with pytest.raises(settings.ConfigFileError) as caught:
        settings.load_config(path, environ=environ)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return [line.replace(str(path), "F", 1) for line in caught.value.errors]


MINIMAL = f"""
apps:
  - app_id: "{APP_ID}"
    app_key: {SECRET}
"""


#: Two apps on lines 1-7; :func:`with_policy` puts ``policies:`` on line 8.
TWO_APPS = f"""
apps:
  - app_id: "{APP_ID}"
    name: frontdesk
    app_key: {SECRET}
  - app_id: "{OTHER_ID}"
    name: lobby
    app_key: {SECRET}
"""
AGE = "match: {session_age_over_seconds: 2700}"
QUOTA = "match: {max_sessions: 8}"
STOP = "action: stop_sessions"


def with_policy(*keys: str, head: str = TWO_APPS) -> str:
    """``head`` and one policy: ``- name: p`` on line 9, then ``keys`` from line 10 on."""
    return head + "policies:\n  - name: p\n" + "".join(f"    {key}\n" for key in keys)
