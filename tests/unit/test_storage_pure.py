"""Pure storage logic: partial names, S3 part sizing, and the translation of foreign errors."""

from __future__ import annotations

import errno

import paramiko
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from hypothesis import given
from hypothesis import strategies as st

from skynet.common.errors import InvalidPath, RemoteAccessDenied, RemoteFull, RemoteRefused, RemoteUnavailable
from skynet.common.messages import Generation
from skynet.uploader.storage import _partial, local, s3, sftp
from skynet.uploader.storage._s3_multipart import MAX_PARTS, MIN_PART, MiB, part_size_for, plan

BIG = Generation(size=10 * MiB, mtime_ns=123, inode=7)
SMALL = Generation(size=10, mtime_ns=123, inode=7)


def test_a_large_files_partial_names_its_generation_and_hides_next_to_the_file() -> None:
    name = _partial.partial_name("photo 1.jpg", BIG)
    assert name == f".photo 1.jpg.{10 * MiB}-123-7.skynet-partial"
    assert _partial.is_partial(name)
    assert _partial.partial_tag_for("photo 1.jpg", name) == f"{10 * MiB}-123-7"


def test_a_small_files_partial_has_one_fixed_name() -> None:
    assert _partial.partial_name("a.txt", SMALL) == ".a.txt.skynet-partial"
    assert _partial.belongs_to("a.txt", ".a.txt.skynet-partial")


def test_partials_of_similar_names_are_not_confused() -> None:
    other = _partial.partial_name("a.1-2-3", BIG)
    assert _partial.partial_tag_for("a", other) is None
    assert not _partial.belongs_to("a", other)
    assert not _partial.belongs_to("a", ".a.skynet-partial.txt")


def test_a_long_name_still_fits_in_one_component() -> None:
    name = "é" * 127  # 254 bytes
    partial = _partial.partial_name(name, BIG)
    assert len(partial.encode()) <= 255
    assert _partial.belongs_to(name, partial)


def test_resume_restarts_at_the_last_whole_chunk() -> None:
    assert _partial.resume_offset(0, 100) == 0
    assert _partial.resume_offset(99, 100) == 0
    assert _partial.resume_offset(250, 100) == 200


@given(st.integers(min_value=0, max_value=5 * 1024**4))
def test_a_part_size_never_needs_more_than_10000_parts(size: int) -> None:
    part = part_size_for(size)
    assert part >= MIN_PART and part % MiB == 0
    parts = plan(size, part)
    assert len(parts) <= MAX_PARTS
    assert sum(p.length for p in parts) == size
    assert all(p.offset == i * part for i, p in enumerate(parts))


def test_the_part_size_grows_with_the_file() -> None:
    assert part_size_for(512 * MiB) == 8 * MiB
    assert part_size_for(1024**4) == 105 * MiB  # 1 TiB in 10,000 parts
    assert part_size_for(512 * MiB, configured_mib=16) == 16 * MiB


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error("SlowDown", 503), RemoteUnavailable),
        (_client_error("InternalError", 500), RemoteUnavailable),
        (_client_error("NoSuchUpload", 404), RemoteUnavailable),
        (_client_error("AccessDenied", 403), RemoteRefused),
        (_client_error("InvalidBucketName", 400), RemoteRefused),
        (_client_error("EntityTooLarge", 400), RemoteRefused),
        (_client_error("KeyTooLongError", 400), InvalidPath),
        (_client_error("XMinioStorageFull", 507), RemoteFull),
        (_client_error("XMinioAdminBucketQuotaExceeded", 400), RemoteFull),
        (_client_error("", 507), RemoteFull),
        (EndpointConnectionError(endpoint_url="http://x"), RemoteUnavailable),
        (NoCredentialsError(), RemoteAccessDenied),
        # The store refuses the uploader as a whole: paused, never a file dead-lettered for it.
        (_client_error("InvalidAccessKeyId", 403), RemoteAccessDenied),
        (_client_error("SignatureDoesNotMatch", 403), RemoteAccessDenied),
        (_client_error("NoSuchBucket", 404), RemoteAccessDenied),
        (_client_error("RequestTimeTooSkewed", 403), RemoteAccessDenied),
    ],
)
def test_s3_errors_say_whether_retrying_helps(exc: Exception, expected: type) -> None:
    assert type(s3.classify(exc)) is expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError("timed out"), RemoteUnavailable),
        (ConnectionResetError(), RemoteUnavailable),
        (EOFError(), RemoteUnavailable),
        (paramiko.SSHException("x"), RemoteUnavailable),
        (paramiko.AuthenticationException("x"), RemoteAccessDenied),
        (PermissionError(errno.EACCES, "Permission denied"), RemoteRefused),
        (OSError("Failure"), RemoteRefused),
    ],
)
def test_sftp_errors_say_whether_retrying_helps(exc: Exception, expected: type) -> None:
    assert type(sftp.classify(exc)) is expected


def test_a_missing_share_is_unavailable_and_a_full_disk_worth_retrying() -> None:
    assert type(local.classify(OSError(errno.ESTALE, "stale"))) is RemoteUnavailable
    assert type(local.classify(OSError(errno.ENOSPC, "full"))) is RemoteFull
    assert type(local.classify(OSError(errno.EDQUOT, "quota"))) is RemoteFull
    assert type(local.classify(OSError(errno.EROFS, "read-only"))) is RemoteRefused


def test_a_striped_partial_has_a_name_of_its_own_that_still_belongs_to_its_file() -> None:
    striped = _partial.partial_name("photo 1.jpg", BIG, striped=True)
    assert striped != _partial.partial_name("photo 1.jpg", BIG)
    assert _partial.belongs_to("photo 1.jpg", striped) and _partial.is_partial(striped)
    assert _partial.partial_tag_for("photo 1.jpg", striped) == f"{10 * MiB}-123-7{_partial.STRIPED}"


@given(st.text(min_size=1, max_size=40).filter(lambda n: "/" not in n and "\x00" not in n))  # short: not hashed
def test_a_partials_name_gives_back_the_name_it_was_written_for(name: str) -> None:
    big = Generation(size=_partial.RESUME_MIN_BYTES, mtime_ns=1_700_000_000_123_456_789, inode=42)
    small = Generation(size=10, mtime_ns=5, inode=6)
    for partial in (_partial.partial_name(name, big), _partial.partial_name(name, big, striped=True)):
        assert _partial.final_name(partial) == name
    assert _partial.final_name(_partial.partial_name(f"{name}.mov", small)) == f"{name}.mov"
    assert _partial.final_name(name) is None or _partial.is_partial(name)
