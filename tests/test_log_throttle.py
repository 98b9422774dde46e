"""LineBudget, and once a minute: lines a flood can drive, bounded, saying what they held back."""

from mcrelay.logs import LineBudget, once_a_minute


def test_one_line_an_interval_and_the_next_counts_those_held_back() -> None:
    throttle = once_a_minute()
    assert throttle.take(100.0) == 0
    assert [throttle.take(100.0 + n) for n in range(1, 4)] == [None, None, None]
    assert throttle.take(159.9) is None
    assert throttle.take(160.0) == 4
    assert throttle.take(300.0) == 0


def test_a_line_budget_takes_a_burst_then_a_rate_and_says_what_it_held_back() -> None:
    budget = LineBudget(burst=3, per_s=2.0)
    assert [budget.take(10.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert budget.take(10.25) is None  # half a line earned
    assert budget.take(10.5) == 3
    assert budget.take(100.0) == 0


def test_a_line_held_back_may_tell_of_several() -> None:
    """A refused run of keys is one line telling of each key refused."""
    throttle = once_a_minute()
    assert throttle.take(0.0, 4) == 0
    assert throttle.take(1.0, 4) is None
    assert throttle.take(2.0) is None
    assert throttle.take(60.0, 4) == 5
