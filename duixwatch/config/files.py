"""Reading a file the configuration names, bounded: :func:`read_head`.

The config file, the web config, key and headers files are read through here, and so is the
daemon's fingerprint of the config file (``daemon.watch_config_seconds``). A path can name
something that never ends — ``/dev/zero``, ``/dev/urandom``, a FIFO whose writer never closes,
a log file growing while it is read — or something huge; ``read_bytes()`` on it reads until
memory runs out. So every read takes at most ``max_bytes`` bytes (the caller asks for one more
than its limit to tell "too large" from "exactly the limit"), and a file that is not a regular
file (a pipe, a device: ``-c <(sops -d …)`` is a pipe) must reach its end within
``timeout_seconds``. Opening never waits for a FIFO's writer (``O_NONBLOCK``).
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time

__all__ = ["PIPE_TIMEOUT_SECONDS", "read_head"]

#: How long a pipe or device may take to deliver its whole content (a decrypting
#: ``<(sops -d …)`` needs a moment; ``/dev/tty`` or a silent FIFO would wait forever).
PIPE_TIMEOUT_SECONDS = 5.0
#: The largest single read.
_CHUNK_BYTES = 1 << 20


def read_head(
    path: str | os.PathLike[str],
    max_bytes: int,
    *,
    timeout_seconds: float = PIPE_TIMEOUT_SECONDS,
) -> bytes:
    """The first ``max_bytes`` bytes of the file at ``path``, or all of it when shorter.

    Raises :class:`OSError` (its ``strerror`` a reason fit for a message): the open or read
    failed, ``path`` is a directory, or — for a pipe or device — no end of file came within
    ``timeout_seconds`` (:class:`TimeoutError`).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if stat.S_ISREG(mode):
            os.set_blocking(fd, True)
            return _read_regular(fd, max_bytes)
        return _read_stream(fd, max_bytes, timeout_seconds)
    finally:
        os.close(fd)


def _read_regular(fd: int, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    left = max_bytes
    while left > 0:
        chunk = os.read(fd, min(_CHUNK_BYTES, left))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_stream(fd: int, max_bytes: int, timeout_seconds: float) -> bytes:
    deadline = time.monotonic() + timeout_seconds
    chunks: list[bytes] = []
    left = max_bytes
    while left > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError(
                errno.ETIMEDOUT,
                f"not a regular file, and no end of file within {timeout_seconds:g} s",
            )
        try:
            chunk = os.read(fd, min(_CHUNK_BYTES, left))
        except BlockingIOError:
            continue  # woken without data (another reader took it): wait again
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
