"""Frames, the contents of a secure DATA plaintext: ``type u8, length u16 LE, value``.

Several frames share one DATA; a plaintext whose frames overrun it is dropped whole
(:func:`decode_frames_untrusted` raises), and frames of an unknown type are skipped
and counted by the caller (``unknown`` in :class:`Frames`).
"""

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError

# +--------+-----------+----------------+
# | type   | length    | value ...      |
# | u8     | u16 LE    | length bytes   |
# +--------+-----------+----------------+
FRAME_HEADER = struct.Struct("<BH")
# FRAGMENT value: msg_seq u32 LE, index u16 LE, count u16 LE, then the bytes.
FRAGMENT_HEADER = struct.Struct("<IHH")
# ACK value: msg_seq u32 LE, count u16 LE, then ceil(count / 8) bitmap bytes.
ACK_HEADER = struct.Struct("<IH")
# ABANDON value: msg_seq u32 LE.
ABANDON_VALUE = struct.Struct("<I")
PATH_DATA_BYTES = 8
MAX_PLAINTEXT_BYTES = 1200
"""The most plaintext one DATA carries (its datagram is then 1,232 bytes)."""
MAX_FRAGMENT_BYTES = 1150
"""The most message bytes one FRAGMENT carries."""
MAX_FRAGMENTS = 64
"""The most fragments a receiver accepts for one message (a sender needs at most 58)."""
MAX_FRAMES_PER_DATA = 400
"""Frames read from one DATA at most; one with more is dropped whole (``too_many_frames``).
As many as a DATA of the page's 1,200 bytes can hold (3-byte frames of an unknown type,
which the page says to skip): a peer's DATA holds a window's fragments, a few ACKs,
ABANDONs and path frames, and 6,540 small ACKs in a 64 KB DATA cost the relay 12 ms
for one seal of the sender's."""
MAX_MSG_SEQ = 0xFFFFFFFF


class FrameType(IntEnum):
    FRAGMENT = 1
    ACK = 2
    PATH_CHALLENGE = 3
    PATH_RESPONSE = 4
    ABANDON = 5


def _check_msg_seq(msg_seq: int) -> None:
    if not 0 <= msg_seq <= MAX_MSG_SEQ:
        raise LocalProtocolError(f"msg_seq {msg_seq} does not fit in 32 bits")


@dataclass(frozen=True, slots=True)
class Fragment:
    """Piece ``index`` (0-based) of ``count`` of message ``msg_seq``."""

    msg_seq: int
    index: int
    count: int
    data: bytes

    def __post_init__(self) -> None:
        _check_msg_seq(self.msg_seq)
        if not 0 <= self.index < self.count <= 0xFFFF:
            raise LocalProtocolError(f"fragment {self.index} of {self.count} is not a fragment")


@dataclass(frozen=True, slots=True)
class Ack:
    """Which of message ``msg_seq``'s ``count`` fragments the receiver holds."""

    msg_seq: int
    count: int
    received: frozenset[int]

    def __post_init__(self) -> None:
        _check_msg_seq(self.msg_seq)
        if not 0 <= self.count <= 0xFFFF:
            raise LocalProtocolError(f"ACK count {self.count} does not fit in 16 bits")
        received = self.received
        if received and (min(received) < 0 or max(received) >= self.count):
            raise LocalProtocolError("ACK names a fragment past its count")

    @property
    def complete(self) -> bool:
        return len(self.received) == self.count

    @property
    def mask(self) -> int:
        """The fragments received as bits: index ``i`` is ``1 << i``."""
        if len(self.received) == self.count:  # the common case: the whole message
            return (1 << self.count) - 1
        return int.from_bytes(ack_bitmap(self), "little")


@dataclass(frozen=True, slots=True)
class PathChallenge:
    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != PATH_DATA_BYTES:
            raise LocalProtocolError(f"PATH_CHALLENGE holds {PATH_DATA_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class PathResponse:
    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != PATH_DATA_BYTES:
            raise LocalProtocolError(f"PATH_RESPONSE holds {PATH_DATA_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class Abandon:
    """The sender gave message ``msg_seq`` up: stop waiting for it."""

    msg_seq: int

    def __post_init__(self) -> None:
        _check_msg_seq(self.msg_seq)


Frame = Fragment | Ack | PathChallenge | PathResponse | Abandon


@dataclass(frozen=True, slots=True)
class Frames:
    """A plaintext's frames, in order, and how many of unknown type were skipped."""

    frames: tuple[Frame, ...]
    unknown: int = 0


def ack_bitmap(ack: Ack) -> bytes:
    """Index ``i`` is bit ``1 << (i % 8)`` of byte ``i // 8`` (the mask, little-endian).
    Byte by byte: a peer's count goes up to 65,535, and shifting an integer that
    wide once per index would cost the square of it."""
    bitmap = bytearray((ack.count + 7) // 8)
    for index in ack.received:
        bitmap[index >> 3] |= 1 << (index & 7)
    return bytes(bitmap)


def encode_frame(frame: Frame) -> bytes:
    """One frame as bytes: its header and its value."""
    # The two frames of every message first, by their exact type: a class pattern
    # costs an isinstance and an attribute lookup per field, at every frame sent.
    if type(frame) is Fragment:
        value = FRAGMENT_HEADER.pack(frame.msg_seq, frame.index, frame.count) + frame.data
        return _frame(FrameType.FRAGMENT, value)
    if type(frame) is Ack:
        return _frame(
            FrameType.ACK, ACK_HEADER.pack(frame.msg_seq, frame.count) + ack_bitmap(frame)
        )
    match frame:
        case PathChallenge(data):
            type_, value = FrameType.PATH_CHALLENGE, data
        case PathResponse(data):
            type_, value = FrameType.PATH_RESPONSE, data
        case Abandon(msg_seq):
            type_, value = FrameType.ABANDON, ABANDON_VALUE.pack(msg_seq)
        case _:
            raise TypeError(f"{frame!r} is not a frame")
    return _frame(type_, value)


def _frame(type_: FrameType, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise LocalProtocolError(f"a frame value of {len(value)} bytes is over 65535")
    return FRAME_HEADER.pack(type_, len(value)) + value


def encode_frames(frames: Iterable[Frame]) -> bytes:
    return b"".join(encode_frame(frame) for frame in frames)


def frame_size(frame: Frame) -> int:
    """How many plaintext bytes ``frame`` takes, header included."""
    match frame:
        case Fragment(data=data):
            return FRAME_HEADER.size + FRAGMENT_HEADER.size + len(data)
        case Ack(count=count):
            return FRAME_HEADER.size + ACK_HEADER.size + (count + 7) // 8
        case PathChallenge() | PathResponse():
            return FRAME_HEADER.size + PATH_DATA_BYTES
        case Abandon():
            return FRAME_HEADER.size + ABANDON_VALUE.size


def decode_frames_untrusted(plaintext: bytes) -> Frames:
    """Every frame of a DATA plaintext (empty: a keep-alive, no frames).

    A frame header or value that runs past the end, or a known frame whose value
    breaks its layout, makes the whole plaintext malformed: nothing in it is acted on.
    """
    frames: list[Frame] = []
    unknown = 0
    offset = 0
    end = len(plaintext)
    while offset < end:
        if len(frames) + unknown >= MAX_FRAMES_PER_DATA:
            raise RemoteProtocolError(
                f"over {MAX_FRAMES_PER_DATA} frames in one DATA", DropReason.TOO_MANY_FRAMES
            )
        if end - offset < FRAME_HEADER.size:
            raise RemoteProtocolError(f"frame header cut short at byte {offset}")
        type_, length = FRAME_HEADER.unpack_from(plaintext, offset)
        offset += FRAME_HEADER.size
        if offset + length > end:
            raise RemoteProtocolError(
                f"frame type {type_} claims {length} bytes, {end - offset} remain"
            )
        value = plaintext[offset : offset + length]
        offset += length
        if type_ in _DECODERS:
            frames.append(_DECODERS[type_](value))
        else:
            unknown += 1
    return Frames(tuple(frames), unknown)


def _fragment_untrusted(value: bytes) -> Frame:
    if len(value) < FRAGMENT_HEADER.size:
        raise RemoteProtocolError(f"FRAGMENT of {len(value)} bytes, its header needs 8")
    msg_seq, index, count = FRAGMENT_HEADER.unpack_from(value)
    if not index < count:
        raise RemoteProtocolError(f"FRAGMENT {index} of {count}")
    return Fragment(msg_seq, index, count, bytes(value[FRAGMENT_HEADER.size :]))


def _ack_untrusted(value: bytes) -> Frame:
    if len(value) < ACK_HEADER.size:
        raise RemoteProtocolError(f"ACK of {len(value)} bytes, its header needs 6")
    msg_seq, count = ACK_HEADER.unpack_from(value)
    bitmap = value[ACK_HEADER.size :]
    if len(bitmap) != (count + 7) // 8:
        raise RemoteProtocolError(f"ACK of {count} fragments with a {len(bitmap)}-byte bitmap")
    if count < len(_WHOLE) and bitmap == _FULL_BITMAPS[count]:  # the common case
        return Ack(msg_seq, count, _WHOLE[count])
    if count > MAX_FRAGMENTS:  # of no message a peer can have: its bits are not read
        return Ack(msg_seq, count, _WHOLE[0])
    # Byte by byte (bits past the count say nothing): linear in a count up to 65,535.
    received = frozenset(index for index in range(count) if bitmap[index >> 3] >> (index & 7) & 1)
    return Ack(msg_seq, count, received)


_FULL_BITMAPS = tuple(
    ((1 << n) - 1).to_bytes((n + 7) // 8, "little") for n in range(MAX_FRAGMENTS + 1)
)
"""The bitmap of a whole message, for each count a channel holds (at most 64
fragments; a peer's larger count takes the general path, and is refused further on)."""
_WHOLE = tuple(frozenset(range(n)) for n in range(MAX_FRAGMENTS + 1))
"""Its fragments, likewise (an Ack is immutable: one set serves every ACK of a count)."""


def _path_untrusted(kind: type[PathChallenge] | type[PathResponse]) -> Callable[[bytes], Frame]:
    def decode(value: bytes) -> Frame:
        if len(value) != PATH_DATA_BYTES:
            raise RemoteProtocolError(f"{kind.__name__} of {len(value)} bytes, not 8")
        return kind(bytes(value))

    return decode


def _abandon_untrusted(value: bytes) -> Frame:
    if len(value) != ABANDON_VALUE.size:
        raise RemoteProtocolError(f"ABANDON of {len(value)} bytes, not 4")
    return Abandon(ABANDON_VALUE.unpack(value)[0])


_DECODERS: dict[int, Callable[[bytes], Frame]] = {
    FrameType.FRAGMENT: _fragment_untrusted,
    FrameType.ACK: _ack_untrusted,
    FrameType.PATH_CHALLENGE: _path_untrusted(PathChallenge),
    FrameType.PATH_RESPONSE: _path_untrusted(PathResponse),
    FrameType.ABANDON: _abandon_untrusted,
}
