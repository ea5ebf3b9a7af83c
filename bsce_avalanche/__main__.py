"""``python -m bsce_avalanche`` is the ``bsce-experiment`` command."""

from .cli import main

raise SystemExit(main())
