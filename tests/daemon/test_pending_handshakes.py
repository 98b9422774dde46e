"""Handshakes answered and waiting for their first DATA: forgotten when they say."""

from typing import cast

from mcrelay.daemon.secure.peers import Peer, Pending, PendingHandshakes
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.session import PENDING_LIFETIME_S


def test_a_handshake_is_forgotten_at_the_time_its_expiry_names() -> None:
    """``now - created`` could be just under the lifetime at the very time
    ``next_expiry`` named (1.013 + 15 - 1.013 < 15 in floats): the profile's loop woke
    for it, forgot nothing, and woke again at once, for ever (found by review, a relay
    under the mock clock spun at that instant)."""
    created = 1.013
    indexes: dict[int, Peer | Pending] = {}
    pending = PendingHandshakes(indexes)
    keypair = cast(Keypair, object())
    pending.add(7, Pending(b"k" * 32, keypair, 1, 1, ("127.0.0.1", 1), created))
    now = pending.next_expiry()
    assert now - created < PENDING_LIFETIME_S  # the floats this test is about
    pending.expire(now)
    assert len(pending) == 0
    assert indexes == {}
