"""Pure path logic: relative POSIX paths on the wire, and their safe mapping to a remote.

No I/O here. A wire path is relative to the watched folder, uses ``/`` separators, has no empty,
``.`` or ``..`` component, no NUL or other control character, and is valid UTF-8 text.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import unicodedata

from skynet.common.errors import InvalidPath

MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # one C-speed search instead of a Python loop per character


def validate_rel_path(path: str) -> str:
    """Return ``path`` if it is a safe wire path, else raise :class:`InvalidPath` saying why.

    The empty string is the root of the watched folder.
    """
    if path == "":
        return path
    if not isinstance(path, str):
        raise InvalidPath(f"path must be text, got {type(path).__name__}")
    try:
        encoded = path.encode("utf-8", errors="strict")
    except UnicodeEncodeError as exc:
        raise InvalidPath(f"path {path!r} is not valid UTF-8") from exc
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidPath(f"path is {len(encoded)} bytes long (limit {MAX_PATH_BYTES})")
    if path.startswith("/"):
        raise InvalidPath(f"path {path!r} is absolute")
    if _CONTROL.search(path):
        raise InvalidPath(f"path {path!r} contains a control character")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidPath(f"path {path!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidPath(f"path component {part[:40]!r}... is over {MAX_COMPONENT_BYTES} bytes")
    return path


def validate_child(parent: str, name: str) -> str:
    """``parent/name`` as a wire path, checking only ``name`` — ``parent`` is a valid wire path.

    The same rules as :func:`validate_rel_path` at a cost per component instead of per path
    (a walk of 200,000 files validated every path from its root).
    """
    rel = f"{parent}/{name}" if parent else name
    if name in ("", ".", "..") or "/" in name or _CONTROL.search(name):
        return validate_rel_path(rel)  # raises with the reason
    try:
        size = len(name.encode("utf-8", errors="strict"))
    except UnicodeEncodeError as exc:
        raise InvalidPath(f"path {rel!r} is not valid UTF-8") from exc
    if size > MAX_COMPONENT_BYTES or len(rel) * 4 > MAX_PATH_BYTES:
        return validate_rel_path(rel)
    return rel


def plain_names(parent: str, names: list[str]) -> bool:
    """True when ``parent/name`` is a valid wire path for every name of a folder listing.

    One check for the whole listing (``parent`` is a valid wire path): a walk then skips
    :func:`validate_child` per entry. False does not mean a name is bad, only that each must be
    checked on its own (a control character, a name that is not UTF-8, or one long enough to need
    counting its bytes).
    """
    if not names:
        return True
    joined = "/".join(names)  # "/" cannot occur in a name the filesystem lists
    if _CONTROL.search(joined) or "" in names or "." in names or ".." in names:
        return False
    try:
        joined.encode("utf-8", errors="strict")
    except UnicodeEncodeError:
        return False
    longest = max(map(len, names))  # at most 4 UTF-8 bytes per character
    return longest * 4 <= MAX_COMPONENT_BYTES and (len(parent) + 1 + longest) * 4 <= MAX_PATH_BYTES


def rel_path_from_fs(root: str, full: str) -> str:
    """Map an absolute filesystem path under ``root`` to a wire path (or raise InvalidPath).

    Names that are not valid UTF-8 (surrogate-escaped by Python) are refused, never mangled.
    """
    if os.sep == "/" and full.startswith(root) and full[len(root) : len(root) + 1] == "/" and root[-1:] != "/":
        # The common case (a path the observer built from ``root``): no normalisation needed when
        # the rest is already a clean wire path. Anything else takes the slower path below.
        with contextlib.suppress(InvalidPath):
            return validate_rel_path(full[len(root) + 1 :])
    rel = os.path.relpath(full, root)
    if rel == ".":
        return ""
    if rel.startswith(".." + os.sep) or rel == "..":
        raise InvalidPath(f"{full!r} is outside the watched folder")
    wire = rel.replace(os.sep, "/") if os.sep != "/" else rel
    return validate_rel_path(wire)


def local_path(root: str, rel: str) -> str:
    """Return the filesystem path of wire path ``rel`` under ``root`` (validated first)."""
    validate_rel_path(rel)
    if rel == "":
        return root
    return os.path.join(root, *rel.split("/"))


def remote_join(base: str, rel: str) -> str:
    """Join a target's base path and a wire path with ``/``; never escapes ``base``."""
    validate_rel_path(rel)
    base = base.strip("/")
    if not rel:
        return base
    return f"{base}/{rel}" if base else rel


def is_within(base: str, candidate: str) -> bool:
    """True if POSIX path ``candidate`` is ``base`` or lies below it (after normalisation)."""
    b = posixpath.normpath("/" + base.strip("/"))
    c = posixpath.normpath("/" + candidate.strip("/"))
    return c == b or c.startswith(b.rstrip("/") + "/")


def nfc_key(path: str) -> str:
    """The key under which two names collide on a normalising, case-insensitive target."""
    return unicodedata.normalize("NFC", path).casefold()
