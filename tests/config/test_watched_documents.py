"""config: ``apps[].conversations``, ``conversation_poll_interval_seconds``, ``avatars``."""

from __future__ import annotations

from pathlib import Path

from tests.config.support import APP_ID, SECRET, load, problems

HEAD = f"""
apps:
  - app_id: "{APP_ID}"
    app_key: {SECRET}
"""


def test_the_defaults_watch_nothing(tmp_path: Path) -> None:
    (app,) = load(tmp_path, HEAD).apps
    assert app.conversations == ()
    assert app.avatars == ()
    assert app.conversation_poll_interval_seconds == 300


def test_ids_or_auto(tmp_path: Path) -> None:
    (app,) = load(
        tmp_path,
        HEAD + '    conversations: ["1838510538465554434", 108]\n    avatars: ["12345"]\n'
        "    conversation_poll_interval_seconds: 60\n",
    ).apps
    assert app.conversations == ("1838510538465554434", "108")
    assert app.avatars == ("12345",)
    assert app.conversation_poll_interval_seconds == 60
    (app,) = load(tmp_path, HEAD + "    conversations: auto\n").apps
    assert app.conversations == "auto"


def test_bad_values_name_their_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        HEAD + "    conversations: sometimes\n    avatars: [abc]\n"
        "    conversation_poll_interval_seconds: 0\n",
    )
    assert any(line.startswith("F:4: apps[0].conversations") for line in found), found
    assert any(line.startswith("F:5: apps[0].avatars[0]") for line in found), found
    assert any(
        line.startswith("F:6: apps[0].conversation_poll_interval_seconds") for line in found
    ), found
