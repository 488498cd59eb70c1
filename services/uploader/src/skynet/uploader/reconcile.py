"""Reconcile decisions (pure logic, no I/O): what to do so that the remote matches the local now.

A message is only a hint that a path changed. The decision looks at the local file's generation
*now* and at what the remote records.
"""

from __future__ import annotations

import enum


class Decision(enum.Enum):
    SKIP = "skip"  # the remote already records this generation
    UPLOAD = "upload"  # the local file is newer or different
    DELETE = "delete"  # gone locally, present remotely, mirror mode
    KEEP = "keep"  # gone locally, present remotely, keep mode: leave it
    NOTHING = "nothing"  # gone on both sides


def decide(*, local_present: bool, remote_present: bool, remote_matches: bool, mirror: bool, force: bool) -> Decision:
    if local_present:
        if remote_present and remote_matches and not force:
            return Decision.SKIP
        return Decision.UPLOAD
    if not remote_present:
        return Decision.NOTHING
    return Decision.DELETE if mirror else Decision.KEEP


def can_move(*, src_local_present: bool, remote_src_present: bool, remote_src_matches_dst: bool) -> bool:
    """A server-side move is right when the remote src holds exactly what dst now holds locally."""
    return not src_local_present and remote_src_present and remote_src_matches_dst
