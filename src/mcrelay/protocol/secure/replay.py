"""The DATA counter's limits, and the receiver's replay window (RFC 6479, as WireGuard).

The window is a ring of 128 blocks of 64 bits (8,192 bits). The block of the highest
counter accepted is always in it, and one block's worth (64 bits) is redundant: it is
cleared as the window moves into it, so RFC 6479 never needs to shift bits. A counter
may arrive once while it is at most :data:`WINDOW_COUNTERS` (8,128) below the highest
accepted; an older one is refused.

It is used in two steps around the AEAD (secure-wire.md, DATA):

1. :meth:`ReplayWindow.check_untrusted` before decrypting: a counter past the limit
   or already behind the window is dropped at once. It changes nothing.
2. :meth:`ReplayWindow.accept_untrusted` once the AEAD has authenticated the
   datagram: refuses a duplicate or a counter behind the window, else marks it.

So a forged datagram never moves the window.
"""

from mcrelay.protocol.errors import DropReason, RemoteProtocolError

REKEY_AFTER_MESSAGES = 1 << 60
"""Counters a client sends on one keypair before it starts a new handshake."""
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
"""No counter at or past this is sent or accepted: the keypair is spent."""

BLOCK_BITS = 64
RING_BLOCKS = 128
WINDOW_COUNTERS = (RING_BLOCKS - 1) * BLOCK_BITS
"""How far below the highest counter accepted a counter may still arrive: 8,128."""
_BLOCK_SHIFT = BLOCK_BITS.bit_length() - 1
_BIT_MASK = BLOCK_BITS - 1
_RING_MASK = RING_BLOCKS - 1


class ReplayWindow:
    """The counters accepted on one keypair (one direction), as far back as the window."""

    __slots__ = ("_highest", "_ring")

    def __init__(self) -> None:
        self._highest = -1
        self._ring = [0] * RING_BLOCKS

    @property
    def highest(self) -> int | None:
        """The highest counter accepted, or None before the first."""
        return None if self._highest < 0 else self._highest

    def check_untrusted(self, counter: int) -> None:
        """Refuse, before decrypting, a counter that could never be accepted.

        Raises :class:`RemoteProtocolError`: ``counter_limit`` at or past
        :data:`REJECT_AFTER_MESSAGES`, ``counter_too_old`` behind the window.
        """
        if counter >= REJECT_AFTER_MESSAGES:
            raise RemoteProtocolError(
                f"counter {counter} is past the keypair's last", DropReason.COUNTER_LIMIT
            )
        if self._highest - counter > WINDOW_COUNTERS:
            raise RemoteProtocolError(
                f"counter {counter} is behind the window (highest {self._highest})",
                DropReason.COUNTER_TOO_OLD,
            )

    def accept_untrusted(self, counter: int) -> bool:
        """Mark an authenticated datagram's counter; whether it is above every earlier one.

        Raises :class:`RemoteProtocolError` as :meth:`check_untrusted` does, and
        ``replayed`` for a counter already accepted. A counter above the highest
        moves the window (what roaming waits for: secure-wire.md, DATA).
        """
        self.check_untrusted(counter)
        block = counter >> _BLOCK_SHIFT
        ahead = counter > self._highest
        if ahead:
            current = self._highest >> _BLOCK_SHIFT
            for skipped in range(current + 1, current + 1 + min(block - current, RING_BLOCKS)):
                self._ring[skipped & _RING_MASK] = 0
            self._highest = counter
        slot = block & _RING_MASK
        bit = 1 << (counter & _BIT_MASK)
        if self._ring[slot] & bit:
            raise RemoteProtocolError(
                f"counter {counter} was already accepted", DropReason.REPLAYED
            )
        self._ring[slot] |= bit
        return ahead
