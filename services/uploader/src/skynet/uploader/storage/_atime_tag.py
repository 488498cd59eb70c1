"""A tag of a file's full generation, kept in the remote copy's atime (SFTP and ``file://``).

Those targets record a size and an mtime, not an inode, and SFTP (v3) only whole seconds: two
versions of a file of one size written within one clock tick, or two such files swapped by name
(``mv a t; mv b a; mv t b``), would look identical and the newer one would be skipped. The remote
mtime keeps the local mtime for people and tools; the atime carries this tag of (size, mtime_ns,
inode). The tag lies in the future (2038 to 2072), later than any mtime or ctime, so reading the
file where atimes follow ``relatime`` (Linux's default) never moves it. Should something move it
anyway (``strictatime``, a filesystem that cannot hold it), the only cost is one needless
re-upload: a mismatch never hides a difference.
"""

from __future__ import annotations

import hashlib

from skynet.common.messages import Generation
from skynet.uploader.storage.base import RemoteEntry


def generation_tag(generation: Generation) -> int:
    """Seconds since the epoch, between 2^31 and 2^31 + 2^30."""
    digest = hashlib.blake2b(generation.token().encode(), digest_size=4).digest()
    return 0x80000000 + (int.from_bytes(digest, "big") & 0x3FFFFFFF)


def matches_tagged(entry: RemoteEntry, generation: Generation) -> bool:
    """Size, mtime (whole seconds: SFTP v3 and some NAS filesystems keep no finer) and the tag."""
    return (
        entry.size == generation.size
        and entry.mtime is not None
        and int(entry.mtime) == generation.mtime_ns // 10**9
        and entry.atime is not None
        and int(entry.atime) == generation_tag(generation)
    )
