"""The daemon's HTTP surface: its routes, and serving an ASGI app inside a task group."""
