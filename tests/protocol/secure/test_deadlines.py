"""A deadline a state machine gives is a time at which it acts: a caller woken then
finds the work done, and is not handed the same deadline again (a busy loop).

Times such as 10.004 + 10.0 round, so each check compares ``now`` against the very
sum its deadline is, never a difference against the interval."""

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcrelay.protocol.secure.keypairs import REJECT_AFTER_S, REKEY_AFTER_S
from mcrelay.protocol.secure.paths import PathValidator

from .test_session import CLIENT_ADDRESS, MOVED, handshake, pair

TIMES = st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(TIMES)
@example(10.004)
@example(0.1)
def test_a_keep_alive_goes_at_its_deadline(start: float) -> None:
    p = pair(start)
    p.to_relay(start)
    p.to_client(start)
    deadline = p.client.next_deadline()
    assert deadline > start
    assert p.client.datagrams(deadline) != []
    assert p.client.next_deadline() > deadline


@settings(max_examples=200, deadline=None)
@given(TIMES)
@example(10.004)
@example(0.1)
def test_a_session_expires_at_its_deadline(start: float) -> None:
    p = pair(start)
    p.relay.last_sent = float("inf")  # no keep-alive due: the expiry is the deadline
    deadline = p.relay.next_deadline()
    assert p.relay.expired(deadline)


@settings(max_examples=200, deadline=None)
@given(TIMES)
@example(10.004)
@example(0.1)
def test_a_keypair_asks_for_a_rekey_and_is_refused_at_its_times(start: float) -> None:
    keypair, _ = handshake(start)
    assert keypair.wants_rekey(start + REKEY_AFTER_S)
    assert not keypair.usable(start + REJECT_AFTER_S)


@settings(max_examples=200, deadline=None)
@given(TIMES)
@example(10.004)
@example(0.1)
def test_a_path_challenge_goes_again_at_its_deadline(start: float) -> None:
    paths = PathValidator(CLIENT_ADDRESS)
    paths.seen(MOVED, 1000, True)
    assert paths.challenge_due(start) is not None
    deadline = paths.next_deadline()
    assert deadline is not None
    assert paths.challenge_due(deadline) is not None
