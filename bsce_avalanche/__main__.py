"""``python -m bsce_avalanche`` is the ``bsce-experiment`` command."""

from .runner.cli import main

raise SystemExit(main())
