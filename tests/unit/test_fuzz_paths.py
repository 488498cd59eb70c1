"""Fuzzing path mapping: no wire path, however hostile, maps outside the target's base.

Checked for the shared rules (validate_rel_path, remote_join, rel_path_from_fs) and for each
backend's own remote-path function (S3 keys, SFTP paths, file:// paths), without any I/O.
"""

from __future__ import annotations

import os
import posixpath
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skynet.common.errors import InvalidPath
from skynet.common.paths import (
    is_within,
    local_path,
    plain_names,
    rel_path_from_fs,
    remote_join,
    validate_rel_path,
)
from skynet.uploader.storage.config import BackendSettings
from skynet.uploader.storage.local import LocalBackend
from skynet.uploader.storage.s3 import S3Backend
from skynet.uploader.storage.sftp import open_backend as open_sftp

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any code point, surrogates included (what os.fsdecode makes of a name that is not UTF-8),
# biased towards the characters that matter for paths.
hostile_text = st.lists(
    st.sampled_from(["/", ".", "..", "\\", "\x00", "\n", "\r", "~", "%2e", "é", "e\u0301", "\udcff", "\u202e"])
    | st.characters(codec=None),
    max_size=60,
).map("".join)

NASTY = [
    "..",
    "../x",
    "a/../../b",
    "/etc/passwd",
    "a//b",
    "./a",
    "a/.",
    "x\x00y",
    "\udcff",
    "a\\..\\b",
    "~/x",
    "é" * 200,
]


_KNOWN_HOSTS = tempfile.NamedTemporaryFile(prefix="skynet-fuzz-known-", delete=False)  # noqa: SIM115
_KNOWN_HOSTS.close()  # empty: nothing connects here
SFTP_SETTINGS = BackendSettings(sftp_password="not-used", sftp_known_hosts=_KNOWN_HOSTS.name)


def _accepted(path: str) -> bool:
    try:
        validate_rel_path(path)
    except InvalidPath:
        return False
    return True


@FUZZ
@given(hostile_text)
def test_an_accepted_wire_path_is_relative_clean_text_with_no_escape(path: str) -> None:
    if not _accepted(path):
        return
    assert not path.startswith("/")
    assert all(part not in ("", ".", "..") for part in path.split("/")) or path == ""
    assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in path)
    path.encode("utf-8")  # never raises for an accepted path
    assert posixpath.normpath(path) == path or path == ""


@FUZZ
@given(st.sampled_from(["", "base", "/base/dir/", "a/b/c"]), hostile_text)
def test_remote_join_never_leaves_the_base(base: str, path: str) -> None:
    try:
        joined = remote_join(base, path)
    except InvalidPath:
        return
    assert is_within(base, joined)


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\x00" not in b), max_size=5))
@example([b"\xff\xfe"])
@example([b".."])
@example([b"a\nb"])
@example([b"x" * 256])
def test_a_name_read_from_disk_maps_back_to_the_same_file_or_is_refused(parts: list[bytes]) -> None:
    root = "/watched"
    full = os.path.join(root, *[os.fsdecode(p) for p in parts]) if parts else root
    try:
        rel = rel_path_from_fs(root, full)
    except InvalidPath:
        return
    if parts and b".." not in parts and b"." not in parts:
        assert local_path(root, rel) == os.path.normpath(full)
    assert is_within(root, local_path(root, rel))


@FUZZ
@given(hostile_text)
@example("../../../etc/passwd")
def test_an_s3_key_always_lies_under_the_prefix(path: str) -> None:
    backend = S3Backend("bucket", "/mirror/base/", BackendSettings())  # no client until first use
    try:
        key = backend._key(path)
    except InvalidPath:
        return
    assert key == "mirror/base" or key.startswith("mirror/base/")
    assert is_within("mirror/base", key)
    assert len(key.encode()) <= 1024


@FUZZ
@given(st.sampled_from(["sftp://u@h:22/srv/base", "sftp://u@h/~/base", "sftp://u@h/~"]), hostile_text)
@example("sftp://u@h:22/srv/base", "..")
def test_an_sftp_path_always_lies_under_the_base_folder(target: str, path: str) -> None:
    backend = open_sftp(target, SFTP_SETTINGS)  # connects lazily
    root = backend._remote("")
    try:
        remote = backend._remote(path)
    except InvalidPath:
        return
    if root == ".":  # home-relative: stays relative, never absolute, never ".."
        assert not remote.startswith("/")
        assert ".." not in remote.split("/")
    else:
        assert is_within(root, remote)
        assert posixpath.normpath(remote) == remote


@FUZZ
@given(hostile_text)
def test_a_file_target_path_always_lies_under_its_folder(path: str) -> None:
    backend = LocalBackend("/srv/mirror")
    try:
        full = backend._full(path)
    except InvalidPath:
        return
    assert os.path.normpath(full) == full
    assert full == "/srv/mirror" or full.startswith("/srv/mirror/")


@pytest.mark.parametrize("path", NASTY)
def test_well_known_escapes_are_refused_by_every_backend(path: str) -> None:
    s3 = S3Backend("bucket", "p", BackendSettings())
    sftp = open_sftp("sftp://u@h/srv/base", SFTP_SETTINGS)
    local = LocalBackend("/srv/mirror")
    if path in ("a\\..\\b", "~/x"):
        # Harmless literal names on a POSIX target: a backslash and a tilde are plain characters.
        assert s3._key(path).startswith("p/") and sftp._remote(path).startswith("/srv/base/")
        return
    for mapping in (s3._key, sftp._remote, local._full):
        with pytest.raises(InvalidPath):
            mapping(path)


names_in_a_folder = st.lists(
    hostile_text.filter(lambda n: "/" not in n) | st.sampled_from(["a" * 63, "a" * 64, "é" * 128, "ok.txt"]),
    max_size=8,
)
valid_parents = st.sampled_from(["", "a", "a/b", "d" * 200 + "/" + "e" * 200, "/".join(["f" * 250] * 16)])


@FUZZ
@given(valid_parents, names_in_a_folder)
@example("", ["ok", "\udcff"])
@example("", ["ok", "x\x00y"])
@example("", ["ok", ".."])
@example("a", ["é" * 128])
def test_a_listing_passed_whole_holds_only_names_each_check_accepts(parent: str, names: list[str]) -> None:
    """The walk's one check per folder never lets through a name the per-name check refuses."""
    validate_rel_path(parent)
    if plain_names(parent, names):
        for name in names:
            assert _accepted(f"{parent}/{name}" if parent else name), name
