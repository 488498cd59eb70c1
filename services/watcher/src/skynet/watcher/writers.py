"""Which files some process holds open for writing (Linux ``/proc``; elsewhere nothing is known).

The stability gate uses it for files it never saw being closed — found by a scan, or already open
when the watcher started — so a file still being written is not mistaken for a quiet one.
Only descriptors whose link points into the watched folder are looked at closely.
"""

from __future__ import annotations

import os
import re

_FLAGS = re.compile(r"^flags:\s*([0-7]+)", re.MULTILINE)
_ACCESS_MODE = 0o3  # O_WRONLY = 1, O_RDWR = 2


def open_for_writing(root: str, candidates: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Of the (st_dev, st_ino) pairs in ``candidates``, those open for writing by any process."""
    found: set[tuple[int, int]] = set()
    if not candidates or not os.path.isdir("/proc/self/fd"):
        return found
    prefix = root.rstrip(os.sep) + os.sep
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if not os.readlink(f"{fd_dir}/{fd}").startswith(prefix):
                    continue
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in candidates or key in found:
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    match = _FLAGS.search(info.read())
            except OSError:
                continue
            if match and int(match.group(1), 8) & _ACCESS_MODE:
                found.add(key)
    return found
