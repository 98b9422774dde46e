"""The retransmission timeout: RFC 6298 with a 5 ms granularity, a 50 ms floor and a 2 s cap."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.protocol.secure.rtt import (
    GRANULARITY_S,
    INITIAL_RTO_S,
    MAX_RTO_S,
    MIN_RTO_S,
    RttEstimator,
)


def test_without_a_sample_the_timeout_is_one_second() -> None:
    rtt = RttEstimator()
    assert rtt.srtt_s is None
    assert rtt.rto_s == INITIAL_RTO_S == 1.0


def test_the_handshake_round_trip_is_the_first_sample() -> None:
    rtt = RttEstimator(0.1)
    assert rtt.srtt_s == 0.1
    assert rtt.rttvar_s == 0.05
    assert rtt.rto_s == pytest.approx(0.1 + 4 * 0.05)


def test_later_samples_follow_rfc_6298() -> None:
    rtt = RttEstimator(0.1)
    rtt.sample(0.3)
    # RTTVAR = 3/4 * 0.05 + 1/4 * |0.1 - 0.3|; SRTT = 7/8 * 0.1 + 1/8 * 0.3
    assert rtt.rttvar_s == pytest.approx(0.0875)
    assert rtt.srtt_s == pytest.approx(0.125)
    assert rtt.latest_s == 0.3
    assert rtt.rto_s == pytest.approx(0.125 + 4 * 0.0875)


def test_the_floor_and_the_granularity() -> None:
    rtt = RttEstimator(0.001)
    assert rtt.rto_s == MIN_RTO_S == 0.05
    steady = RttEstimator(0.048)
    for _ in range(200):
        steady.sample(0.048)
    # RTTVAR has decayed to nothing: G keeps the timeout above SRTT.
    assert steady.rto_s == pytest.approx(0.048 + GRANULARITY_S)


def test_the_cap() -> None:
    assert RttEstimator(5.0).rto_s == MAX_RTO_S == 2.0


def test_backoff_doubles_up_to_the_cap_and_a_sample_ends_it() -> None:
    rtt = RttEstimator(0.1)
    base = rtt.rto_s
    rtt.back_off()
    assert rtt.rto_s == pytest.approx(2 * base)
    rtt.back_off()
    assert rtt.rto_s == pytest.approx(4 * base)
    for _ in range(50):
        rtt.back_off()
    assert rtt.rto_s == MAX_RTO_S
    rtt.sample(0.1)
    assert rtt.backoff == 0
    assert rtt.rto_s < 4 * base


def test_backoff_from_the_initial_timeout() -> None:
    rtt = RttEstimator()
    rtt.back_off()
    assert rtt.rto_s == 2.0
    rtt.back_off()
    assert rtt.rto_s == 2.0


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), max_size=50), st.integers(0, 30))
def test_the_timeout_stays_within_its_bounds(samples: list[float], backoffs: int) -> None:
    rtt = RttEstimator()
    for sample in samples:
        rtt.sample(sample)
    for _ in range(backoffs):
        rtt.back_off()
    assert MIN_RTO_S <= rtt.rto_s <= MAX_RTO_S
