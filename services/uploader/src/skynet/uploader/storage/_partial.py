"""Names of partial uploads (shared by the sftp, file and memory backends).

A partial lives next to its final name and encodes the generation it was started for, so that a
later attempt can tell "continue this one" from "discard it"::

    dir/.<name>.<size>-<mtime_ns>-<inode>.skynet-partial

A name too long to carry the decoration is replaced by a hash of it.

Finding partials of *other* generations takes a listing of the folder, which is worth it only for
files large enough to be worth resuming (``RESUME_MIN_BYTES``). Smaller files use one fixed name
per final name, ``dir/.<name>.skynet-partial``, that the next attempt simply overwrites, so small
files cost no listing and leave nothing behind either. Pure logic, no I/O.
"""

from __future__ import annotations

import hashlib
import re

from skynet.common.messages import Generation
from skynet.common.paths import MAX_COMPONENT_BYTES

SUFFIX = ".skynet-partial"
# Marks a partial that several streams write at once (sftp): it may hold holes near its end, so
# only code that knows to resume it well before its end may continue it. Older code, which would
# take it for a prefix, does not recognise the name and starts a partial of its own instead.
STRIPED = "s"
_GEN_RE = re.compile(r"^\d+-\d+-\d+s?$")
RESUME_MIN_BYTES = 4 * 1024 * 1024


def _stem(name: str) -> str:
    candidate = f".{name}."
    if len(candidate.encode("utf-8")) + 70 + len(SUFFIX) > MAX_COMPONENT_BYTES:
        return "." + hashlib.sha256(name.encode("utf-8")).hexdigest()[:40] + "."
    return candidate


def generation_tag(generation: Generation) -> str:
    return f"{generation.size}-{generation.mtime_ns}-{generation.inode}"


def resumable(generation: Generation) -> bool:
    return generation.size >= RESUME_MIN_BYTES


def partial_name(name: str, generation: Generation, striped: bool = False) -> str:
    """The partial's file name (one path component) for final name ``name`` and ``generation``;
    ``striped``: written by several streams at once (see ``STRIPED``)."""
    if not resumable(generation):
        return simple_partial_name(name)
    return f"{_stem(name)}{generation_tag(generation)}{STRIPED if striped else ''}{SUFFIX}"


def simple_partial_name(name: str) -> str:
    """The one, overwritten, partial name of a small file."""
    return f"{_stem(name)[:-1]}{SUFFIX}"


def belongs_to(name: str, candidate: str) -> bool:
    """True if ``candidate`` is a partial (of any generation) of final name ``name``."""
    return candidate == simple_partial_name(name) or partial_tag_for(name, candidate) is not None


def is_partial(name: str) -> bool:
    return name.startswith(".") and name.endswith(SUFFIX)


def final_name(partial: str) -> str | None:
    """The final name a partial was written for (None if not a partial). A name too long to be
    decorated is hashed in its partial's name: what comes back then names no file."""
    if not is_partial(partial):
        return None
    inner = partial[1 : -len(SUFFIX)]
    head, _, tail = inner.rpartition(".")
    if head and _GEN_RE.match(tail):
        return head
    return inner or None


def partial_tag_for(name: str, candidate: str) -> str | None:
    """If ``candidate`` is a partial of final name ``name`` (any generation), its generation tag."""
    stem = _stem(name)
    if not (candidate.startswith(stem) and candidate.endswith(SUFFIX)):
        return None
    tag = candidate[len(stem) : -len(SUFFIX)]
    return tag if _GEN_RE.match(tag) else None


def resume_offset(partial_len: int, chunk: int) -> int:
    """Where to continue a partial of ``partial_len`` bytes: the last whole-chunk boundary."""
    return (partial_len // chunk) * chunk
