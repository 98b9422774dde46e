"""``mcrelay events`` without --json: one readable line per event, whatever the fields."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.cli.describe import describe_event

T = "2026-11-23T14:28:35.770Z"


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (
            {
                "event": "client_joined",
                "client": "127.0.0.1:4000",
                "fingerprint": "SHA256:x",
                "rekeyed": False,
            },
            f"{T} 127.0.0.1:4000 joined, key SHA256:x",
        ),
        (
            {
                "event": "client_joined",
                "client": "127.0.0.1:4000",
                "fingerprint": "SHA256:y",
                "rekeyed": True,
            },
            f"{T} 127.0.0.1:4000 changed its key to SHA256:y",
        ),
        (
            {"event": "client_left", "client": "127.0.0.1:4000", "reason": "timeout"},
            f"{T} 127.0.0.1:4000 left: timeout",
        ),
        (
            {"event": "message_relayed", "sender": "127.0.0.1:4000", "size": 5, "recipients": 1},
            f"{T} 127.0.0.1:4000 sent 5 bytes to 1 client",
        ),
        (
            {"event": "message_relayed", "sender": "0.0.0.0:0", "size": 0, "recipients": 3},
            f"{T} the relay sent 0 bytes to 3 clients",
        ),
        (
            {"event": "dropped", "reason": "malformed", "source": "10.0.0.7:1"},
            f"{T} dropped from 10.0.0.7:1: malformed",
        ),
        (
            {
                "event": "dropped",
                "reason": "unknown_type",
                "source": "10.0.0.7:1",
                "count": 16376,
                "interval_s": 1.0,
            },
            f"{T} dropped 16376 from 10.0.0.7:1 in 1 s: unknown_type",
        ),
        (
            {
                "event": "dropped",
                "reason": "malformed",
                "source": None,
                "count": 9,
                "interval_s": 1.0,
            },
            f"{T} dropped 9 in 1 s: malformed",
        ),
        (
            {"event": "overflow", "missed": 12},
            f"{T} missed 12 events: this stream was read too slowly",
        ),
        (
            {"event": "client_left", "client": "127.0.0.1:4000", "reason": "kick", "banned": True},
            f"{T} 127.0.0.1:4000 left: kick (banned=yes)",
        ),
        ({"event": "something_new", "level": 3}, f"{T} something_new (level=3)"),
    ],
)
def test_events_for_people(event: dict[str, Any], line: str) -> None:
    assert describe_event({"id": 7, "time": T, **event}) == line


values = st.none() | st.booleans() | st.integers() | st.floats() | st.text()


@given(st.dictionaries(st.text(), values))
def test_any_event_is_one_printable_line(event: dict[str, Any]) -> None:
    assert describe_event(event).isprintable()
