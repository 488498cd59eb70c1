"""Reading messages across versions: events tolerantly, actions strictly."""

from __future__ import annotations

import json

import pytest

from skynet.common.errors import InvalidMessage
from skynet.common.messages import PathChanged, WorkerHeartbeat, decode_action, decode_event, encode


def test_an_event_with_a_field_from_a_newer_version_is_read_with_the_fields_this_one_knows() -> None:
    beat = WorkerHeartbeat(source="s", worker="up-1", role="uploader", files_done=3)
    body = json.dumps({**json.loads(encode(beat)), "throttled_by": "a newer uploader's field"}).encode()
    read = decode_event(body)
    assert isinstance(read, WorkerHeartbeat) and read.files_done == 3
    assert json.loads(read.known_json()) == json.loads(encode(beat))


def test_an_action_with_a_field_this_version_does_not_know_is_refused_with_the_field_named() -> None:
    """An action's unknown field may change what must be done: doing the rest would be a guess."""
    action = PathChanged(source="s", path="a.txt")
    body = json.dumps({**json.loads(encode(action)), "only_if_newer": True}).encode()
    with pytest.raises(InvalidMessage, match="only_if_newer"):
        decode_action(body)
