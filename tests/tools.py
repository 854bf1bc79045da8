"""Helpers for tests that run real external tools (promtool, …).

A missing tool is a test FAILURE, never a skip: a green run must mean the tool really checked
the output.
"""

from __future__ import annotations

import shutil

import pytest


def require_tool(name: str) -> str:
    """The path of the executable ``name`` on PATH; fails the test when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required: install it (see .ci/run / make tools)")
    return path
