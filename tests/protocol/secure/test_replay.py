"""The replay window against a trivial model: the set of counters accepted, and their max."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.secure.replay import (
    REJECT_AFTER_MESSAGES,
    RING_BLOCKS,
    WINDOW_COUNTERS,
    ReplayWindow,
)

RING_BITS = RING_BLOCKS * 64


class Model:
    """What the window must do, with no bound on memory."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def refusal(self, counter: int) -> DropReason | None:
        if counter >= REJECT_AFTER_MESSAGES:
            return DropReason.COUNTER_LIMIT
        if self.seen and max(self.seen) - counter > WINDOW_COUNTERS:
            return DropReason.COUNTER_TOO_OLD
        if counter in self.seen:
            return DropReason.REPLAYED
        return None

    def accept(self, counter: int) -> bool | DropReason:
        refusal = self.refusal(counter)
        if refusal is not None:
            return refusal
        ahead = not self.seen or counter > max(self.seen)
        self.seen.add(counter)
        return ahead


def outcome(window: ReplayWindow, counter: int) -> bool | DropReason:
    try:
        return window.accept_untrusted(counter)
    except RemoteProtocolError as refused:
        return refused.reason


def precheck(window: ReplayWindow, counter: int) -> DropReason | None:
    try:
        window.check_untrusted(counter)
    except RemoteProtocolError as refused:
        return refused.reason
    return None


def run_against_model(counters: list[int]) -> None:
    window, model = ReplayWindow(), Model()
    for counter in counters:
        expected_precheck = model.refusal(counter)
        if expected_precheck is DropReason.REPLAYED:
            expected_precheck = None  # only the accept, after the AEAD, knows duplicates
        assert precheck(window, counter) == expected_precheck, counter
        assert outcome(window, counter) == model.accept(counter), counter
        assert window.highest == (max(model.seen) if model.seen else None)


@st.composite
def walks(draw: st.DrawFn, start: st.SearchStrategy[int]) -> list[int]:
    """Counters around a moving point: steps back and forth, repeats, and jumps that
    land just inside, on, and past the window's edge and wrap the ring many times."""
    position = draw(start)
    counters: list[int] = []
    edges = [WINDOW_COUNTERS - 1, WINDOW_COUNTERS, WINDOW_COUNTERS + 1, RING_BITS - 64, RING_BITS]
    step = st.one_of(
        st.integers(-70, 70),
        st.sampled_from([*edges, *(-edge for edge in edges)]),
        st.integers(-3 * RING_BITS, 3 * RING_BITS),
        st.just(0),
    )
    for _ in range(draw(st.integers(1, 120))):
        repeat = draw(st.booleans())
        if counters and repeat:
            counters.append(counters[draw(st.integers(0, len(counters) - 1))])
        else:
            position = max(0, position + draw(step))
            counters.append(position)
    return counters


@settings(max_examples=400, deadline=None)
@given(walks(st.just(0)))
def test_window_matches_the_model_from_zero(counters: list[int]) -> None:
    run_against_model(counters)


@settings(max_examples=200, deadline=None)
@given(walks(st.integers(REJECT_AFTER_MESSAGES - 3 * RING_BITS, REJECT_AFTER_MESSAGES + 10)))
def test_window_matches_the_model_at_the_counter_limit(counters: list[int]) -> None:
    run_against_model(counters)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3 * RING_BITS), max_size=300))
def test_window_matches_the_model_on_random_counters(counters: list[int]) -> None:
    run_against_model(counters)


@settings(max_examples=100, deadline=None)
@given(st.permutations(range(600)))
def test_any_order_within_the_window_is_accepted_once(counters: list[int]) -> None:
    window = ReplayWindow()
    for counter in counters:
        window.accept_untrusted(counter)
    for counter in counters:
        assert outcome(window, counter) is DropReason.REPLAYED


def test_the_window_is_8128_wide() -> None:
    window = ReplayWindow()
    assert window.accept_untrusted(10_000) is True
    assert outcome(window, 10_000 - WINDOW_COUNTERS) is False
    assert outcome(window, 10_000 - WINDOW_COUNTERS - 1) is DropReason.COUNTER_TOO_OLD
    assert outcome(window, 10_000) is DropReason.REPLAYED
    assert outcome(window, 9_999) is False


def test_a_jump_past_the_whole_ring_forgets_everything_behind_it() -> None:
    window = ReplayWindow()
    for counter in range(200):
        window.accept_untrusted(counter)
    window.accept_untrusted(200 + RING_BITS)
    # Same ring slots as counters 0..199, which are now far behind the window.
    assert outcome(window, 200 + RING_BITS - WINDOW_COUNTERS) is False
    assert outcome(window, 199) is DropReason.COUNTER_TOO_OLD
    # The blocks skipped over were cleared: counters just below the jump are new.
    assert all(outcome(window, c) is False for c in range(RING_BITS + 100, RING_BITS + 200))


def test_the_first_counter_is_ahead_whatever_it_is() -> None:
    assert ReplayWindow().highest is None
    assert ReplayWindow().accept_untrusted(0) is True
    assert ReplayWindow().accept_untrusted(REJECT_AFTER_MESSAGES - 1) is True


@pytest.mark.parametrize("counter", [REJECT_AFTER_MESSAGES, (1 << 64) - 1])
def test_counters_past_the_limit_are_refused_before_and_after(counter: int) -> None:
    window = ReplayWindow()
    assert precheck(window, counter) is DropReason.COUNTER_LIMIT
    assert outcome(window, counter) is DropReason.COUNTER_LIMIT
    assert window.highest is None


def test_the_precheck_changes_nothing() -> None:
    window = ReplayWindow()
    window.check_untrusted(5)
    assert window.highest is None
    assert window.accept_untrusted(5) is True
