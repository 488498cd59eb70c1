"""Fuzzing the message decoders: whatever arrives on a queue, the only failure is InvalidMessage.

A consumer dead-letters an :class:`InvalidMessage` with its reason; any other exception would
crash a worker or loop a message. Inputs are arbitrary bytes, arbitrary JSON, and valid messages
with one field replaced by something hostile.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skynet.common.errors import InvalidMessage, InvalidPath
from skynet.common.messages import (
    FileEvent,
    Generation,
    PathChanged,
    PathMoved,
    PruneRemote,
    RecheckRequest,
    WorkerHeartbeat,
    decode_action,
    decode_event,
    decode_recheck,
    encode,
    encode_changed,
)
from skynet.common.paths import is_within, remote_join, validate_rel_path

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["../x", "/etc/passwd", "a/../../b", "x\x00y", "", ".", "a//b", "\ud800", "é" * 300]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)

GOOD: list[dict[str, Any]] = [
    json.loads(encode(m))
    for m in (
        PathChanged(source="default", path="a/b.txt", generation=Generation(size=3, mtime_ns=5, inode=7)),
        PathMoved(source="default", src="a/b.txt", dst="c/d.txt", is_dir=False),
        PruneRemote(source="default", limit=1000),
        FileEvent.make("failed", source="default", path="x/y", reason="boom", attempt=2),
        FileEvent.make("progress", source="default", path="x/y", size=10, bytes_done=4),
        WorkerHeartbeat(source="default", worker="w-1", role="uploader", active=1, capacity=4),
        RecheckRequest(source="default", path="a/b.txt", generation=Generation(size=3, mtime_ns=5, inode=7)),
    )
]


def _decode_all(body: bytes) -> None:
    for decode in (decode_action, decode_event, decode_recheck):
        try:
            message = decode(body)
        except InvalidMessage as exc:
            assert exc.reason  # a readable reason for the dead-letter header
            assert len(exc.reason) < 2000
            continue
        if not isinstance(message, PathChanged | PathMoved | RecheckRequest):
            # Events are only shown, never acted on, and the watcher reports a refused name in
            # one (``file.failed`` with the name as found): their paths are data, not checked.
            continue
        for name in ("path", "src", "dst"):
            value = getattr(message, name, None)
            if isinstance(value, str) and value:
                assert is_within("base", remote_join("base", value)), value


@FUZZ
@given(st.binary(max_size=2000))
@example(b"\xff\xfe\x00")
@example(b"[" * 70_000)
@example(b'{"type": "action.changed.v1"}')
@example(b'{"type": ["action.changed.v1"]}')
@example(b'{"type": {"a": 1}, "source": "default"}')
@example(b"1e999999")
@example(b'"\\ud800"')
def test_arbitrary_bytes_are_either_decoded_or_refused_as_invalid_messages(body: bytes) -> None:
    _decode_all(body)


@FUZZ
@given(json_values)
def test_arbitrary_json_is_either_decoded_or_refused_as_invalid_messages(value: object) -> None:
    _decode_all(json.dumps(value).encode())


@FUZZ
@given(st.sampled_from(GOOD), st.data())
def test_a_valid_message_with_one_field_replaced_by_anything_never_crashes_a_consumer(
    good: dict[str, Any], data: st.DataObject
) -> None:
    mutated = dict(good)
    key = data.draw(st.sampled_from([*good.keys(), "extra", "type"]))
    if data.draw(st.booleans()) and key in mutated:
        del mutated[key]
    else:
        mutated[key] = data.draw(json_values)
    _decode_all(json.dumps(mutated).encode())


@FUZZ
@given(st.sampled_from(GOOD), st.data())
def test_a_valid_message_with_flipped_bytes_never_crashes_a_consumer(good: dict[str, Any], data: st.DataObject) -> None:
    body = bytearray(json.dumps(good).encode())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = data.draw(st.integers(0, 255))
    _decode_all(bytes(body))


@FUZZ
@given(st.text(alphabet=st.characters(codec=None), max_size=100))
def test_hostile_paths_in_otherwise_valid_actions_never_decode_to_a_path_outside_the_base(path: str) -> None:
    good = dict(GOOD[0], path=path)
    try:
        body = json.dumps(good).encode("utf-8", "surrogatepass")
    except UnicodeEncodeError:
        return
    _decode_all(body)


@FUZZ
@given(
    st.text(max_size=60) | st.sampled_from(['a "quoted" \\ name', "\u2028\u2029", "é/ü/\U0001f600", "x\x7fy"]),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.booleans(),
)
def test_the_scans_fast_encoder_writes_the_same_action_as_the_model(
    path: str, size: int, mtime: int, ino: int, force: bool
) -> None:
    """encode_changed (no pydantic, for scans of many files) decodes to what encode(PathChanged) does."""
    try:
        validate_rel_path(path)
    except InvalidPath:
        return  # the walk never hands it such a path
    fast = decode_action(encode_changed("src-1", path, size, mtime, ino, force=force))
    model = PathChanged(
        id=fast.id,
        created_at=fast.created_at,
        source="src-1",
        path=path,
        generation=Generation(size=size, mtime_ns=mtime, inode=ino),
        force=force,
    )
    assert fast == model
    assert decode_action(encode(model)) == fast
