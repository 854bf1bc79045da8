"""``python -m bench.soak``: see :mod:`bench.soak.main`."""

from bench.soak.main import main

raise SystemExit(main())
