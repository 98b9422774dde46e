"""The client's INIT retries and its held cookie, with explicit times."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.errors import LocalProtocolError
from mcrelay.protocol.secure.retries import HandshakeRetries, HeldCookie, RetryAction


def jitter_ms(value: int) -> bytes:
    return value.to_bytes(2, "little")


def sends(schedule: HandshakeRetries) -> tuple[list[float], float]:
    """Poll at each deadline: the times of the fresh INITs, and when it gave up."""
    times: list[float] = []
    for _ in range(100):
        now = schedule.deadline
        action = schedule.poll(now)
        if action is RetryAction.GIVE_UP:
            return times, now
        assert action is RetryAction.SEND_INIT
        times.append(round(now, 6))
    raise AssertionError("never gave up")


def test_retries_after_1_2_4_then_every_5_s_and_give_up_at_90() -> None:
    times, gave_up = sends(HandshakeRetries(100.0, lambda _: jitter_ms(0)))
    assert times[:4] == [101.0, 103.0, 107.0, 112.0]
    assert times == [101.0, 103.0, 107.0, *(112.0 + 5 * k for k in range(16))]
    assert times[-1] == 187.0
    assert gave_up == 190.0


def test_each_retry_gets_up_to_334_ms_of_jitter() -> None:
    times, _ = sends(HandshakeRetries(0.0, lambda _: jitter_ms(334)))
    assert times[:3] == [1.334, 3.668, 8.002]
    assert HandshakeRetries(0.0, lambda _: jitter_ms(335)).deadline == 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=30, max_size=30))
def test_jitter_stays_within_0_and_334_ms(draws: list[int]) -> None:
    values = iter(draws)
    schedule = HandshakeRetries(0.0, lambda _: jitter_ms(next(values)))
    times, gave_up = sends(schedule)
    gaps = [later - earlier for earlier, later in zip([0.0, *times], times, strict=False)]
    bases = [1.0, 2.0, 4.0] + [5.0] * len(gaps)
    assert all(
        base - 1e-6 <= gap <= base + 0.334 + 1e-6 for gap, base in zip(gaps, bases, strict=False)
    )
    assert gave_up == 90.0


def test_polling_early_waits() -> None:
    schedule = HandshakeRetries(0.0, lambda _: jitter_ms(0))
    assert schedule.poll(0.999) is RetryAction.WAIT
    assert schedule.poll(1.5) is RetryAction.SEND_INIT
    assert schedule.deadline == 3.5  # counted from when the retry went out


def test_a_cookie_earns_one_fresh_init_per_scheduled_init() -> None:
    schedule = HandshakeRetries(0.0, lambda _: jitter_ms(0))
    assert schedule.cookie_arrived()
    assert not schedule.cookie_arrived()
    assert schedule.deadline == 1.0
    assert schedule.poll(1.0) is RetryAction.SEND_INIT
    assert schedule.cookie_arrived()


def test_a_held_cookie_lasts_120_s() -> None:
    held = HeldCookie()
    assert held.current(0.0) is None
    held.hold(b"c" * 16, 10.0)
    assert held.current(129.9) == b"c" * 16
    assert held.current(130.0) is None
    with pytest.raises(LocalProtocolError):
        held.hold(b"short", 0.0)
