"""Every reason a member leaves for has its word on each wire: the secure PRESENCE and
the federation's envelopes (they were strings, and an unknown one became "unreachable"
in silence)."""

import pytest

from mcrelay.core.members import Departure
from mcrelay.daemon.secure.presence import LEAVE_REASONS
from mcrelay.federation.records import departure, leave_reason
from mcrelay.protocol.federation.bodies import LeaveReason


def test_the_secure_presence_has_a_reason_for_every_departure() -> None:
    assert set(LEAVE_REASONS) == set(Departure)


@pytest.mark.parametrize("reason", list(Departure))
def test_the_federation_carries_every_departure_both_ways(reason: Departure) -> None:
    assert departure(leave_reason(reason)) is reason


def test_a_remote_leave_without_a_reason_is_unreachable() -> None:
    assert departure(LeaveReason.NONE) is Departure.UNREACHABLE
