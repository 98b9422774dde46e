"""One handshake's keypair as a session uses it: the two transport keys, the indexes,
the counter it sends under and the replay window it receives under, and its limits.

A keypair sends under counters 0, 1, 2...; it asks for a rekey after
:data:`REKEY_AFTER_S` or :data:`REKEY_AFTER_MESSAGES`, and is refused both ways after
:data:`REJECT_AFTER_S` or ``REJECT_AFTER_MESSAGES``. The page says keys are zeroed
after 540 s; Python cannot zero the copy inside ``cryptography``'s AEAD object, so a
session drops every reference to a keypair once it is refused (at 180 s, earlier than
the page asks), and the memory is the allocator's.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.secure.data import TransportKey
from mcrelay.protocol.secure.handshake import TransportKeys
from mcrelay.protocol.secure.replay import (
    REJECT_AFTER_MESSAGES,
    REKEY_AFTER_MESSAGES,
    ReplayWindow,
)

REKEY_AFTER_S = 120.0
REJECT_AFTER_S = 180.0


class Authenticated(NamedTuple):
    """An authenticated DATA: its plaintext, and whether its counter was the highest yet."""

    plaintext: bytes
    new_highest: bool


@dataclass(eq=False, slots=True)
class Keypair:
    send_key: TransportKey
    receive_key: TransportKey
    local_index: int
    """The index this side chose: DATA to this side carries it."""
    remote_index: int
    """The index the peer chose: DATA from this side carries it."""
    peer_epoch: int
    """The peer's epoch as its handshake told it (the client's in INIT, the relay's in
    RESPONSE): it counts as seen at the first authenticated DATA under this keypair."""
    created: float
    window: ReplayWindow = field(default_factory=ReplayWindow)
    next_counter: int = 0
    received: bool = False
    """Whether an authenticated DATA came under it (the peer uses it)."""

    @classmethod
    def from_handshake(cls, keys: TransportKeys, peer_epoch: int, now: float) -> "Keypair":
        return cls(
            TransportKey(keys.send),
            TransportKey(keys.receive),
            keys.local_index,
            keys.remote_index,
            peer_epoch,
            now,
        )

    def usable(self, now: float) -> bool:
        """Before the reject limit in time (the counter limit is checked per datagram)."""
        return now < self.created + REJECT_AFTER_S

    def can_send(self, now: float) -> bool:
        return self.usable(now) and self.next_counter < REJECT_AFTER_MESSAGES

    def wants_rekey(self, now: float) -> bool:
        return now >= self.created + REKEY_AFTER_S or self.next_counter >= REKEY_AFTER_MESSAGES

    def seal(self, plaintext: bytes) -> bytes:
        """The next DATA under this keypair (the caller checked :meth:`can_send`)."""
        counter = self.next_counter
        self.next_counter += 1
        return self.send_key.seal(self.remote_index, counter, plaintext)

    def open_untrusted(self, datagram: bytes, counter: int, now: float) -> Authenticated:
        """Authenticate a DATA addressed to this keypair (``counter`` from its header).

        Raises :class:`RemoteProtocolError`: ``keypair_expired`` past the reject time,
        ``counter_limit`` or ``counter_too_old`` before decrypting, ``decrypt_failed``,
        then ``replayed`` for a counter already accepted.
        """
        if not self.usable(now):
            raise RemoteProtocolError("DATA under a refused keypair", DropReason.KEYPAIR_EXPIRED)
        self.window.check_untrusted(counter)
        opened = self.receive_key.open_untrusted(datagram)
        new_highest = self.window.accept_untrusted(opened.counter)
        self.received = True
        return Authenticated(opened.plaintext, new_highest)
