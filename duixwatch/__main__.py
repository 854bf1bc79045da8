"""``python -m duixwatch``: the same as the ``duixwatch`` console script."""

from duixwatch.cli import main

raise SystemExit(main())
