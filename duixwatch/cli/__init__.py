"""The ``duixwatch`` command line (:mod:`~duixwatch.cli.parser` is the grammar and the entry
point; each command group has a module of its own)."""

from duixwatch.cli.parser import main

__all__ = ["main"]
