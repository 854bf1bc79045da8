"""duixwatch: watch, alert on and safely clean up DUIX digital-human sessions.

The package is a stack of one-way layers (see STYLE.md and the import-linter contract in
pyproject.toml); each module's docstring says what it owns.
"""

__version__ = "0.1.0.dev0"
