"""cli.output: tables for people show platform text inert (a newline in an id forges no row)."""

from __future__ import annotations

import io

from duixwatch.cli import output
from duixwatch.sim import hostile


def test_a_cell_with_a_newline_or_escape_codes_stays_on_its_row() -> None:
    out = io.StringIO()
    rows = [(hostile.MARKUP_ID, "2026-11-21T12:00:00+00:00"), ("\x1b[31mred\u202e", "?")]
    output.print_table(("SESSION ID", "STARTED AT (UTC)"), rows, out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # the header and one line per row
    assert lines[1].startswith('<script>alert("id")</script>\\u000a1860000000000000001')
    assert "\x1b" not in out.getvalue()
    assert "\u202e" not in out.getvalue()
    assert lines[2].startswith("\\u001b[31mred\\u202e")
