"""The ``duixwatch`` command line."""

from duixwatch.cli.parser import main

__all__ = ["main"]
