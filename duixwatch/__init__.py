"""duixwatch: watch, alert on and safely clean up DUIX digital-human sessions.

One package per stage of the data flow, each importing only the ones below it (README →
Development, enforced by import-linter): cli, daemon, sim, http, export, watch, duix, config,
policy, core. Each module's docstring says what it owns.
"""

__version__ = "0.1.0.dev0"
