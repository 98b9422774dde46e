"""LogThrottle: one line an interval at most, the next saying how many were held back."""

from mcrelay.logs import LogThrottle


def test_one_line_an_interval_and_the_next_counts_those_held_back() -> None:
    throttle = LogThrottle(interval_s=60.0)
    assert throttle.due(100.0) == 0
    assert [throttle.due(100.0 + n) for n in range(1, 4)] == [None, None, None]
    assert throttle.due(159.9) is None
    assert throttle.due(160.0) == 4
    assert throttle.due(300.0) == 0
