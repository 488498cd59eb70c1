"""Opening a file of the watched folder for reading, safely (shared by the backends).

Between the uploader's ``lstat`` (a regular file) and its ``open``, the name may be replaced by a
symlink (to ``/etc/shadow``...), a FIFO (whose open blocks until a writer comes) or a device. So
the open itself refuses to follow a link and never waits (``O_NOFOLLOW | O_NONBLOCK``), and what
was opened is checked to be a regular file before a byte is read.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from skynet.common.errors import LocalFileError

_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def open_regular(local_file: str) -> BinaryIO:
    """Open ``local_file`` for binary reading; LocalFileError unless it is a regular file."""
    try:
        fd = os.open(local_file, _FLAGS | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LocalFileError(f"{local_file} is a symlink: skynet never follows links") from exc
        raise LocalFileError(f"cannot read {local_file}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LocalFileError(f"{local_file} is not a regular file (FIFO, socket or device): never read")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
