"""The runner's user-error type, in a module of its own: light modules (``fileio``) raise it without
importing the config module (and with it Avalanche)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration problem, with a message that says how to fix it."""
