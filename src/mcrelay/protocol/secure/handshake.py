"""INIT and RESPONSE: Noise_IK_25519_ChaChaPoly_BLAKE2s with the prologue
``mcrelay secure 1``, the client the initiator, the relay the responder.

The client makes an :class:`Initiator` per INIT (every attempt is a fresh INIT)
and reads the RESPONSE or COOKIE that answers it. The relay reads an INIT with
:meth:`Responder.read_init_untrusted` -- after :mod:`.admission` let it through,
and before it checks the timestamp (also :mod:`.admission`) -- then answers it with
:meth:`ReceivedInit.respond`. Both ends get :class:`TransportKeys` from Noise Split:
the client sends with the first key, the relay with the second.
"""

import os
import struct
from collections.abc import Callable, Container
from dataclasses import dataclass, field

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.cookies import (
    ZERO_MAC,
    add_macs,
    cookie_key,
    cookie_reply_index_untrusted,
    mac1_key,
    mac1_of,
    mac1_valid,
    mac2_of,
    open_cookie_reply_untrusted,
)
from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted, header
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.protocol.secure.noise import DH_BYTES, HandshakeState

PROTOCOL_NAME = "Noise_IK_25519_ChaChaPoly_BLAKE2s"
PROLOGUE = b"mcrelay secure 1"
MAX_INDEX = 0xFFFFFFFF
MAX_EPOCH = 0xFFFFFFFF
TIMESTAMP_BYTES = 12

# +--------+--------------+-----------+------------------+------------------+------+------+
# | header | sender_index | ephemeral | static (sealed)  | payload (sealed) | mac1 | mac2 |
# | 4      | u32 LE       | 32        | 32 + 16          | 16 + 16          | 16   | 16   |
# +--------+--------------+-----------+------------------+------------------+------+------+
INIT = struct.Struct("<4sI112s16s16s")
# +--------+--------------+----------------+-----------+------------------+------+------+
# | header | sender_index | receiver_index | ephemeral | payload (sealed) | mac1 | mac2 |
# | 4      | u32 LE       | u32 LE         | 32        | 4 + 16           | 16   | 16   |
# +--------+--------------+----------------+-----------+------------------+------+------+
RESPONSE = struct.Struct("<4sII52s16s16s")
# INIT's payload: | TAI64N timestamp: 12 bytes, big-endian | client epoch u32 LE |
INIT_PAYLOAD = struct.Struct("<12sI")
# RESPONSE's payload: | the relay's epoch for this member u32 LE |
RESPONSE_PAYLOAD = struct.Struct("<I")
INDEX = struct.Struct("<I")
# TAI64N: | seconds label u64 BE | nanoseconds u32 BE |
TAI64N = struct.Struct(">QI")
TAI64_UNIX_EPOCH = 2**62 + 10
"""The TAI64 label of the Unix epoch, as WireGuard counts it (TAI is 10 s ahead of UTC)."""
NS_PER_S = 1_000_000_000


def tai64n(wall_clock_ns: int) -> bytes:
    """The TAI64N timestamp of a wall-clock time in nanoseconds since the Unix epoch
    (``time.time_ns()``). Timestamps compare as bytes in the order of their times."""
    if wall_clock_ns < 0:
        raise LocalProtocolError("a wall-clock time before 1970")
    seconds, nanoseconds = divmod(wall_clock_ns, NS_PER_S)
    return TAI64N.pack(TAI64_UNIX_EPOCH + seconds, nanoseconds)


def fresh_index(in_use: Container[int], random_bytes: Callable[[int], bytes] = os.urandom) -> int:
    """A random u32 that no live keypair of ours holds (``in_use``)."""
    while True:
        (index,) = INDEX.unpack(random_bytes(INDEX.size))
        if index not in in_use:
            chosen: int = index
            return chosen


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= MAX_INDEX:
        raise LocalProtocolError(f"{name} {value} is not a u32")


@dataclass(frozen=True, slots=True)
class TransportKeys:
    """A keypair from one handshake: what DATA is sealed and opened with.

    ``local_index`` is the index this side chose (DATA to it carries it as
    receiver_index), ``remote_index`` the peer's (DATA from this side carries it).
    """

    send: bytes = field(repr=False)
    receive: bytes = field(repr=False)
    local_index: int
    remote_index: int
    handshake_hash: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Established:
    """What a client learns from the RESPONSE to its INIT."""

    keys: TransportKeys
    relay_epoch: int


class Initiator:
    """One INIT of a client, and what the relay answers to it.

    A failed read (a forged or damaged answer) leaves it as it was, so the genuine
    answer can still follow.
    """

    __slots__ = ("_cookie_key", "_mac1_key_response", "_noise", "datagram", "sender_index")

    def __init__(
        self,
        static: KeyPair,
        relay_static: bytes,
        *,
        ephemeral_private: bytes,
        sender_index: int,
        timestamp: bytes,
        epoch: int,
        cookie: bytes | None = None,
    ) -> None:
        """``timestamp`` is :func:`tai64n`; ``cookie`` the one the client holds, if it
        is younger than 120 s (it makes mac2)."""
        _check_u32("sender_index", sender_index)
        _check_u32("epoch", epoch)
        if len(timestamp) != TIMESTAMP_BYTES:
            raise LocalProtocolError(f"a TAI64N timestamp has 12 bytes, not {len(timestamp)}")
        if len(relay_static) != DH_BYTES:
            raise LocalProtocolError(f"a relay key has 32 bytes, not {len(relay_static)}")
        self._noise = HandshakeState(
            PROTOCOL_NAME,
            initiator=True,
            prologue=PROLOGUE,
            s=static.private,
            s_public=static.public,
            e=ephemeral_private,
            rs=relay_static,
        )
        message = self._noise.write_message(INIT_PAYLOAD.pack(timestamp, epoch))
        body = header(DatagramType.INIT) + INDEX.pack(sender_index) + message
        self.sender_index = sender_index
        self.datagram = add_macs(body, mac1_key(relay_static), cookie)
        """The INIT to send (152 bytes)."""
        self._mac1_key_response = mac1_key(static.public)
        self._cookie_key = cookie_key(relay_static)

    @property
    def mac1(self) -> bytes:
        return mac1_of(self.datagram)

    def read_cookie_untrusted(self, datagram: bytes) -> bytes:
        """The cookie in a COOKIE answering this INIT (hold it, send a fresh INIT)."""
        if cookie_reply_index_untrusted(datagram) != self.sender_index:
            raise RemoteProtocolError("COOKIE for another INIT", DropReason.UNKNOWN_INDEX)
        return open_cookie_reply_untrusted(
            datagram, cookie_key=self._cookie_key, init_mac1=self.mac1
        )

    def read_response_untrusted(self, datagram: bytes) -> Established:
        """The transport keys and the relay's epoch from the RESPONSE to this INIT."""
        if datagram_type_untrusted(datagram) is not DatagramType.RESPONSE:
            raise RemoteProtocolError("not a RESPONSE")
        _, relay_index, receiver_index, message, _, _ = RESPONSE.unpack(datagram)
        if receiver_index != self.sender_index:
            raise RemoteProtocolError("RESPONSE to another INIT", DropReason.UNKNOWN_INDEX)
        if not mac1_valid(datagram, self._mac1_key_response):
            raise RemoteProtocolError("RESPONSE with a wrong mac1", DropReason.BAD_MAC1)
        if mac2_of(datagram) != ZERO_MAC:
            raise RemoteProtocolError("RESPONSE whose mac2 is not zeros")
        if self._noise.finished:
            raise RemoteProtocolError("a second RESPONSE to one INIT", DropReason.UNKNOWN_INDEX)
        noise = self._noise.copy()
        (relay_epoch,) = RESPONSE_PAYLOAD.unpack(noise.read_message_untrusted(message))
        self._noise = noise
        send, receive = noise.split_keys()
        keys = TransportKeys(send, receive, self.sender_index, relay_index, noise.handshake_hash)
        return Established(keys, relay_epoch)


@dataclass(frozen=True, slots=True)
class Response:
    """The RESPONSE to send and the relay's keypair for the new session."""

    datagram: bytes
    keys: TransportKeys


class ReceivedInit:
    """An INIT that passed Noise: who sent it, when (by its clock), in which epoch."""

    __slots__ = ("_noise", "client_static", "epoch", "sender_index", "timestamp")

    def __init__(
        self, noise: HandshakeState, sender_index: int, timestamp: bytes, epoch: int
    ) -> None:
        assert noise.rs is not None
        self._noise = noise
        self.client_static: bytes = noise.rs
        self.sender_index = sender_index
        self.timestamp = timestamp
        self.epoch = epoch

    def respond(self, *, ephemeral_private: bytes, sender_index: int, epoch: int) -> Response:
        """The RESPONSE, with our fresh index and the member's epoch (once per INIT)."""
        _check_u32("sender_index", sender_index)
        _check_u32("epoch", epoch)
        self._noise.e = ephemeral_private
        message = self._noise.write_message(RESPONSE_PAYLOAD.pack(epoch))
        body = header(DatagramType.RESPONSE) + INDEX.pack(sender_index)
        body += INDEX.pack(self.sender_index) + message
        datagram = add_macs(body, mac1_key(self.client_static), None)
        receive, send = self._noise.split_keys()
        keys = TransportKeys(
            send, receive, sender_index, self.sender_index, self._noise.handshake_hash
        )
        return Response(datagram, keys)


class Responder:
    """The relay's side of handshakes under its static key."""

    __slots__ = ("mac1_key", "static")

    def __init__(self, static: KeyPair) -> None:
        self.static = static
        self.mac1_key = mac1_key(static.public)

    def read_init_untrusted(self, datagram: bytes) -> ReceivedInit:
        """Who sent this INIT, and its payload; raises only :class:`RemoteProtocolError`
        (``bad_mac1``: stay silent; ``handshake_failed``: Noise refused it)."""
        if datagram_type_untrusted(datagram) is not DatagramType.INIT:
            raise RemoteProtocolError("not an INIT")
        if not mac1_valid(datagram, self.mac1_key):
            raise RemoteProtocolError("INIT with a wrong mac1", DropReason.BAD_MAC1)
        _, sender_index, message, _, _ = INIT.unpack(datagram)
        noise = HandshakeState(
            PROTOCOL_NAME,
            initiator=False,
            prologue=PROLOGUE,
            s=self.static.private,
            s_public=self.static.public,
        )
        timestamp, epoch = INIT_PAYLOAD.unpack(noise.read_message_untrusted(message))
        return ReceivedInit(noise, sender_index, timestamp, epoch)
