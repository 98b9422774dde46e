"""Typed events decoded from datagrams: what a peer asked for, with no I/O attached.

Relay side (client -> relay): :data:`RelayBound`. Client side (relay -> client):
:data:`ClientBound`. Every event is a frozen, slotted dataclass.
"""

from dataclasses import dataclass

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.legacy.fragments import Fragment


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """SERVER_KEY_REQUEST (7): send the relay's public key back."""


@dataclass(frozen=True, slots=True)
class ClientKey:
    """CLIENT_PUBLIC_KEY (4): register or re-key the source with this PEM key.

    Keys in a row (no FRAGMENT or DISCONNECT between them) are one event: ``pem`` is
    the last, ``earlier`` those before it in datagram order. Acting on each in turn
    leaves the source with the last one it accepts, so that one acts and the keys
    after it are refused (docs/protocol.md, "TLV framing")."""

    pem: bytes
    earlier: tuple[bytes, ...] = ()

    def newest_first(self) -> tuple[bytes, ...]:
        """The keys from the last back, the order in which they are tried."""
        return (self.pem, *reversed(self.earlier))


@dataclass(frozen=True, slots=True)
class FragmentReceived:
    """FRAGMENT (1): a piece of a message."""

    fragment: Fragment


@dataclass(frozen=True, slots=True)
class FragmentsUnread:
    """FRAGMENTs (1) of a source not registered, before any key in their datagram: to
    be dropped on arrival, so only counted (a datagram of thousands cost the relay 12
    to 26 ms decoding each)."""

    count: int


@dataclass(frozen=True, slots=True)
class DisconnectRequest:
    """DISCONNECT (8)."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """KEEPALIVE (9)."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """TLVs of unknown type or sent in the wrong direction: counted, not acted on.

    The relay's decoder gives one for all such TLVs of a datagram (``type`` is the
    first one's, ``count`` how many), so that thousands of them cost no objects."""

    type: int
    count: int = 1


RelayBound = (
    KeyRequest
    | ClientKey
    | FragmentReceived
    | FragmentsUnread
    | DisconnectRequest
    | Keepalive
    | Ignored
)


@dataclass(frozen=True, slots=True)
class ServerKey:
    """SERVER_PUBLIC_KEY (5)."""

    pem: bytes


@dataclass(frozen=True, slots=True)
class RelayedMessage:
    """SENDER_INFO (10) + RELAYED_MESSAGE (6): ciphertext for us, and who sent it."""

    sender: Address
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class PeerJoined:
    """CLIENT_CONNECTED (11)."""

    peer: Address


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """CLIENT_DISCONNECTED (12)."""

    peer: Address


ClientBound = ServerKey | RelayedMessage | PeerJoined | PeerLeft | Ignored
