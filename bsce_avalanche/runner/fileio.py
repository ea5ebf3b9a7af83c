"""Safe files for a run directory: atomic writes (a crash or a kill never leaves a
half-written results file or checkpoint behind: readers see the old file or the new one)
and one writer per directory (:func:`lock_run_dir`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["atomic_write", "write_json_atomic", "write_text_atomic", "lock_run_dir", "LOCK_FILE"]

LOCK_FILE = ".lock"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # created with mode 0666 minus the umask, as open() would (tempfile.mkstemp forces 0600)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.ndarray, torch.Tensor)):
        return value.tolist()
    raise TypeError(f"Cannot serialise {type(value).__name__} to JSON")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """JSON (no NaN allowed: use null) written atomically."""
    write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False, default=_json_default))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


@contextlib.contextmanager
def lock_run_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """Create ``directory`` if needed and hold an exclusive lock on it while in the block; a second
    writer (another process, or another open in this one) gets a :class:`ConfigError` naming the
    holder's pid. An ``flock`` on ``directory/.lock``: the kernel releases it when its holder dies."""
    directory = Path(directory)
    lock = directory / LOCK_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    warnings.warn(f"{directory}: no file locks on this filesystem ({err.strerror}): "
                                  "nothing stops two runs from writing there at once.")
                    break
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(f"{directory} is in use by another run (pid {holder}): wait for it to end, or use "
                                  "another --output-dir.") from None
            try:  # a holder ending between our open and our lock removed that file: lock the new one
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as err:
        why = "it is a file" if directory.is_file() else err.strerror
        raise ConfigError(f"cannot write to the output directory {directory} ({why}): choose another --output-dir "
                          "or fix its permissions.") from None
    try:
        yield directory
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # still holding the lock, so no other writer is using this file
        os.close(fd)
