"""Which mode a W&B run starts in: ``online``, ``offline`` or ``disabled``, for the :mod:`.wandb_logger`.

:func:`resolve_wandb_mode`: the mode asked for (argument, else ``WANDB_MODE``, else online with an API key here,
offline without). An online start first asks :func:`server_unreachable` (one HEAD request, at most
``PROBE_TIMEOUT_S`` s, interruptible): without network, wandb would retry for ``init_timeout`` s and then hold the
process at exit as long, even after Ctrl-C or SIGTERM. A server that does not answer, or on which ``wandb.init``
fails, is remembered by the process (:func:`record_online_start`): its later runs to that server go offline at once,
without a probe or a warning, for ``ONLINE_RETRY_S`` (10 minutes; :func:`online_start_due`), then it is probed again.
A grid is told once per server and period, not once per run.
"""

from __future__ import annotations

import netrc
import os
import ssl
import time
import urllib.error
import urllib.request
from typing import Optional
from urllib.parse import urlsplit

from .schema import CHOICES

__all__ = ["MODES", "PROBE_TIMEOUT_S", "ONLINE_RETRY_S", "base_url", "has_wandb_credentials", "resolve_wandb_mode",
           "server_unreachable", "online_start_due", "record_online_start"]

MODES = CHOICES["wandb_mode"]  # online, offline, disabled
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # older spellings wandb still accepts
PROBE_TIMEOUT_S = 5.0

#: The W&B servers this process could not start a run on: base URL -> (time.monotonic(), why). A grid's
#: later runs to that server go offline at once (not one init_timeout each) for ONLINE_RETRY_S, then retry.
_online_failures: dict[str, tuple[float, str]] = {}
ONLINE_RETRY_S = 600.0


def base_url() -> str:
    """The W&B server runs go to: ``WANDB_BASE_URL``, else wandb's setting."""
    import wandb  # a heavy import, only when the environment does not say

    return os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url


def has_wandb_credentials() -> bool:
    """Whether an API key is set up here: ``WANDB_API_KEY`` or a netrc entry for the W&B host (as
    ``wandb login`` writes). Local files only: the server may still refuse it (then: offline)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        entries = netrc.netrc(os.environ.get("NETRC"))  # None: ~/.netrc
    except (OSError, netrc.NetrcParseError):
        return False
    hosts = {urlsplit(base_url()).hostname, "api.wandb.ai"}
    return any((entries.authenticators(host) or ("", "", ""))[2] for host in hosts if host)


def resolve_wandb_mode(mode: Optional[str] = None) -> tuple:
    """``(mode, reason)``: the ``mode`` argument, else ``WANDB_MODE``, else ``"online"`` when
    :func:`has_wandb_credentials`, else ``"offline"`` (with the ``wandb sync`` command printed); the
    reason: ``"argument"``, ``"env"``, ``"credentials"`` or ``"no-credentials"``. Unknown: ValueError."""
    for value, source, reason in ((mode, "mode argument", "argument"),
                                  (os.environ.get("WANDB_MODE"), "WANDB_MODE", "env")):
        if value:
            name = _MODE_ALIASES.get(value.strip().lower(), value.strip().lower())
            if name not in MODES:
                raise ValueError(f"{source} is {value!r}, which is not a W&B mode; use one of {', '.join(MODES)}.")
            return name, reason
    return ("online", "credentials") if has_wandb_credentials() else ("offline", "no-credentials")


def server_unreachable(url: str) -> Optional[str]:
    """Why the W&B server at ``url`` does not answer a HEAD request to its API, or None when it does (any
    HTTP status counts; so does a TLS error, which wandb judges with its own certificates)."""
    request = urllib.request.Request(url.rstrip("/") + "/graphql", method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        pass
    except (OSError, ValueError) as err:  # URLError, timeouts, a malformed URL
        reason = getattr(err, "reason", err)
        if not isinstance(err, ssl.SSLError) and not isinstance(reason, ssl.SSLError):
            return f"the server {url} does not answer: {reason}"
    return None


def online_start_due(url: str) -> bool:
    """Whether to try an online start on ``url``: no start there failed in this process, or the last failure is
    more than ``ONLINE_RETRY_S`` old."""
    known = _online_failures.get(url)
    return known is None or time.monotonic() - known[0] > ONLINE_RETRY_S


def record_online_start(url: str, failure: Optional[str]) -> None:
    """Remember how an online start on ``url`` went: ``failure`` (why it did not start) or None (it did)."""
    if failure is None:
        _online_failures.pop(url, None)
    else:
        _online_failures[url] = (time.monotonic(), failure)
