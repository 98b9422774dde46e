"""What envelopes carry: messages, presence, snapshots, kicks (the plaintext bodies).

Every body is a frozen dataclass that validates on construction; :func:`encode_body`
gives its bytes and :attr:`KIND` its envelope kind, :func:`decode_body_untrusted` reads
the body of an opened envelope by its kind and raises :class:`RemoteProtocolError`
(``bad_envelope``) only: for a field out of its bounds, a body cut short, or bytes
left over after it.

A member is a record (:class:`MemberRecord`): its origin as the secure profile names
it (:class:`~mcrelay.protocol.secure.origins.Origin`: kind, key id, address), its
member id as the relay shows it, and when it connected.
"""

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.federation.envelope import (
    MAX_U64,
    Kind,
    check_relay_name,
    relay_name_untrusted,
)
from mcrelay.protocol.secure.messages import MAX_CHAT_BYTES
from mcrelay.protocol.secure.origins import (
    RELAY_ORIGIN,
    Origin,
    OriginKind,
    decode_origin_untrusted,
    encode_origin,
)

MAX_MEMBER_ID_BYTES = 255
MAX_FEDERATED_MESSAGE_BYTES = MAX_CHAT_BYTES
"""The largest message a member of either profile may send (a secure member's)."""
MAX_SNAPSHOT_MEMBERS = 1_000
"""Members in one SNAPSHOT part: 1,000 records of at most 316 bytes fit in 1 MiB."""
MAX_PARTS = 0xFFFF
MAX_KICK_REPLY_IDS = 0xFFFF
MAX_KICK_MESSAGE_BYTES = 0xFFFF
RELAY_MEMBER_ID = "relay"
MAX_TIME_S = 253_402_300_799.0
"""The last second of year 9999: a ``connected_at`` past it is no time (it would not
even print as a date)."""
MAX_KICK_BAN_S = 365 * 24 * 3600.0
"""The longest ban a KICK may ask for: the API's (``core.bans.MAX_BAN_S``)."""

# Member record: the origin (protocol/secure/origins.py), then the id and connected_at:
# +------+----------+----------+---------+--------+-----------+--------------+
# | kind | key_id   | addr_len | address | id_len | member id | connected_at |
# | u8   | 32 bytes | u8       | 0, 6, 18| u8     | UTF-8     | f64 LE       |
# +------+----------+----------+---------+--------+-----------+--------------+
LENGTH8 = struct.Struct("<B")
LENGTH16 = struct.Struct("<H")
F64 = struct.Struct("<d")
"""connected_at, ban_s."""
# PRESENCE: | event u8 | reason u8 | member record |
PRESENCE_HEAD = struct.Struct("<BB")
# SNAPSHOT: | version u64 | part u16 | parts u16 | count u16 | nonce 16 | msg_seq u64 |
#           kick_seq u64 | count member records |
SNAPSHOT_HEAD = struct.Struct("<QHHH16sQQ")
# SNAPSHOT_REQUEST: | nonce 16 | name_len u8 | target relay (0 bytes: every relay) |
NONCE_BYTES = 16
NO_NONCE = bytes(NONCE_BYTES)
"""A periodic SNAPSHOT's nonce: it answers no request."""
# KICK: | name_len u8 | target relay | id_len u8 | member id | ban_s f64 | scope u8 |
KICK_TAIL = struct.Struct("<dB")
# KICK_REPLY: | request epoch u64 | request seq u64 | status u8 | count u16 |
#             count x (id_len u8 | member id) | msg_len u16 | UTF-8 message |
KICK_REPLY_HEAD = struct.Struct("<QQBH")


class PresenceEvent(IntEnum):
    JOINED = 1
    LEFT = 2
    MOVED = 3


class LeaveReason(IntEnum):
    """The secure profile's values (``protocol.secure.messages.LeaveReason``), on a wire
    of their own, and one more: ``REPLACED`` (a session replaced by a newer one, or a
    legacy member a secure client at its address displaced)."""

    NONE = 0
    DISCONNECT = 1
    TIMEOUT = 2
    KICK = 3
    BAN = 4
    UNREACHABLE = 5
    REPLACED = 6


class KickScope(IntEnum):
    DEFAULT = 0
    ADDRESS = 1
    HOST = 2
    KEY = 3


class KickStatus(IntEnum):
    REMOVED = 0
    NOT_FOUND = 1
    REFUSED = 2


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{what} {text!r} is not encodable as UTF-8") from None


def _check_member_id(member_id: str) -> None:
    if not 0 < len(_utf8(member_id, "member id")) <= MAX_MEMBER_ID_BYTES:
        raise LocalProtocolError(f"a member id of 1 to {MAX_MEMBER_ID_BYTES} bytes: {member_id!r}")


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A member of some relay: the relay itself (id "relay"), a secure or a legacy client."""

    origin: Origin
    member_id: str
    connected_at: float

    def __post_init__(self) -> None:
        _check_member_id(self.member_id)
        if not (math.isfinite(self.connected_at) and 0 <= self.connected_at <= MAX_TIME_S):
            raise LocalProtocolError(f"connected_at {self.connected_at} is not a time")
        if self.origin.kind == OriginKind.RELAY and (
            self.member_id != RELAY_MEMBER_ID or self.connected_at != 0
        ):
            raise LocalProtocolError("the relay's record is id 'relay', connected_at 0")


def _check_client(member: MemberRecord, what: str) -> None:
    if member.origin.kind == OriginKind.RELAY:
        raise LocalProtocolError(f"{what} names a client, not the relay")


RELAY_MEMBER = MemberRecord(RELAY_ORIGIN, RELAY_MEMBER_ID, 0.0)
"""The relay itself: the origin of what its operator posts."""


@dataclass(frozen=True, slots=True)
class Message:
    KIND: ClassVar[Kind] = Kind.MSG
    origin: MemberRecord
    body: bytes

    def __post_init__(self) -> None:
        if len(self.body) > MAX_FEDERATED_MESSAGE_BYTES:
            raise LocalProtocolError(f"a message of {len(self.body)} bytes")


@dataclass(frozen=True, slots=True)
class Presence:
    """A member joined, left (with a reason, and only then), or moved (a new address)."""

    KIND: ClassVar[Kind] = Kind.PRESENCE
    event: PresenceEvent
    reason: LeaveReason
    member: MemberRecord

    def __post_init__(self) -> None:
        if self.event not in _EVENTS or self.reason not in _REASONS:
            raise LocalProtocolError(f"PRESENCE event {self.event} reason {self.reason}")
        if (self.event == PresenceEvent.LEFT) == (self.reason == LeaveReason.NONE):
            raise LocalProtocolError("a PRESENCE has a reason if and only if its event is LEFT")
        _check_client(self.member, "a PRESENCE")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Part ``part`` (0 to ``parts`` - 1) of a relay's members as of presence ``version``."""

    KIND: ClassVar[Kind] = Kind.SNAPSHOT
    version: int
    part: int
    parts: int
    members: tuple[MemberRecord, ...]
    nonce: bytes = NO_NONCE
    """The SNAPSHOT_REQUEST's this answers (:data:`NO_NONCE` for a periodic one)."""
    msg_seq: int = 0
    """The last MSG its relay sealed before it (its receiver takes none up to it)."""
    kick_seq: int = 0
    """And the last KICK."""

    def __post_init__(self) -> None:
        if not 0 <= self.version <= MAX_U64:
            raise LocalProtocolError(f"snapshot version {self.version} is not a u64")
        if len(self.nonce) != NONCE_BYTES:
            raise LocalProtocolError(f"a nonce of {len(self.nonce)} bytes")
        if not (0 <= self.msg_seq <= MAX_U64 and 0 <= self.kick_seq <= MAX_U64):
            raise LocalProtocolError(f"seqs {self.msg_seq}, {self.kick_seq} are not u64s")
        if not 0 <= self.part < self.parts <= MAX_PARTS:
            raise LocalProtocolError(f"snapshot part {self.part} of {self.parts}")
        if len(self.members) > MAX_SNAPSHOT_MEMBERS:
            raise LocalProtocolError(f"a snapshot part of {len(self.members)} members")
        for member in self.members:
            _check_client(member, "a SNAPSHOT")


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Ask ``target`` (every relay when empty) for its members, and for its sequence
    numbers as of the answer, which carries ``nonce``: a receiver knows such an answer
    is fresh, so that no envelope recorded before it is taken again."""

    KIND: ClassVar[Kind] = Kind.SNAPSHOT_REQUEST
    nonce: bytes = NO_NONCE
    target: str = ""

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_BYTES:
            raise LocalProtocolError(f"a nonce of {len(self.nonce)} bytes")
        if self.target:
            check_relay_name(self.target)


@dataclass(frozen=True, slots=True)
class Kick:
    """Remove ``member_id`` from relay ``target``; with ``ban_s`` (seconds, above 0),
    ban it by ``scope`` too."""

    KIND: ClassVar[Kind] = Kind.KICK
    target: str
    member_id: str
    ban_s: float | None
    scope: KickScope

    def __post_init__(self) -> None:
        check_relay_name(self.target)
        _check_member_id(self.member_id)
        if self.ban_s is not None and not 0 < self.ban_s <= MAX_KICK_BAN_S:
            # A year at most, as the API's: 1e300 s made the ban list's dates overflow,
            # and /v1/bans answer 500 for good (found by review).
            raise LocalProtocolError(f"a ban of {self.ban_s} s")
        if self.scope not in _SCOPES:
            raise LocalProtocolError(f"kick scope {self.scope}")


@dataclass(frozen=True, slots=True)
class KickReply:
    """The answer to the KICK sealed as (``request_epoch``, ``request_seq``)."""

    KIND: ClassVar[Kind] = Kind.KICK_REPLY
    request_epoch: int
    request_seq: int
    status: KickStatus
    removed: tuple[str, ...]
    message: str

    def __post_init__(self) -> None:
        if not (0 < self.request_epoch <= MAX_U64 and 0 < self.request_seq <= MAX_U64):
            raise LocalProtocolError(f"request {self.request_epoch}/{self.request_seq}")
        if self.status not in _STATUSES:
            raise LocalProtocolError(f"kick status {self.status}")
        if len(self.removed) > MAX_KICK_REPLY_IDS:
            raise LocalProtocolError(f"a kick reply naming {len(self.removed)} members")
        for member_id in self.removed:
            _check_member_id(member_id)
        if len(_utf8(self.message, "message")) > MAX_KICK_MESSAGE_BYTES:
            raise LocalProtocolError("a kick reply's message over 65,535 bytes")


Body = Message | Presence | Snapshot | SnapshotRequest | Kick | KickReply
_EVENTS = frozenset(PresenceEvent)
_REASONS = frozenset(LeaveReason)
_SCOPES = frozenset(KickScope)
_STATUSES = frozenset(KickStatus)


def split_snapshot(
    version: int,
    members: Sequence[MemberRecord],
    nonce: bytes = NO_NONCE,
    msg_seq: int = 0,
    kick_seq: int = 0,
) -> list[Snapshot]:
    """``members`` as SNAPSHOT parts of at most 1,000 each (one empty part for none),
    each with the answer's ``nonce`` and seqs."""
    chunks = [
        tuple(members[start : start + MAX_SNAPSHOT_MEMBERS])
        for start in range(0, len(members), MAX_SNAPSHOT_MEMBERS)
    ] or [()]
    if len(chunks) > MAX_PARTS:
        raise LocalProtocolError(f"{len(members)} members do not fit in {MAX_PARTS} parts")
    return [
        Snapshot(version, n, len(chunks), chunk, nonce, msg_seq, kick_seq)
        for n, chunk in enumerate(chunks)
    ]


def _short(text: str) -> bytes:
    raw = text.encode("utf-8")
    return LENGTH8.pack(len(raw)) + raw


def encode_member(member: MemberRecord) -> bytes:
    return encode_origin(member.origin) + _short(member.member_id) + F64.pack(member.connected_at)


def encode_body(body: Body) -> bytes:
    """The plaintext of ``body``, to seal as an envelope of kind ``body.KIND``."""
    if isinstance(body, Message):
        return encode_member(body.origin) + body.body
    if isinstance(body, Presence):
        return PRESENCE_HEAD.pack(body.event, body.reason) + encode_member(body.member)
    if isinstance(body, Snapshot):
        head = SNAPSHOT_HEAD.pack(
            body.version,
            body.part,
            body.parts,
            len(body.members),
            body.nonce,
            body.msg_seq,
            body.kick_seq,
        )
        return head + b"".join(encode_member(member) for member in body.members)
    if isinstance(body, SnapshotRequest):
        return body.nonce + _short(body.target)
    if isinstance(body, Kick):
        ban = math.nan if body.ban_s is None else body.ban_s
        return _short(body.target) + _short(body.member_id) + KICK_TAIL.pack(ban, body.scope)
    ids = b"".join(_short(member_id) for member_id in body.removed)
    message = body.message.encode("utf-8")
    head = KICK_REPLY_HEAD.pack(
        body.request_epoch, body.request_seq, body.status, len(body.removed)
    )
    return head + ids + LENGTH16.pack(len(message)) + message


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, DropReason.BAD_ENVELOPE)


class _Reader:
    """Reads a body front to back; anything cut short is ``bad_envelope``."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, n: int) -> bytes:
        end = self.offset + n
        if end > len(self.data):
            raise _bad(f"body cut short at byte {self.offset} (needs {n} more)")
        value = self.data[self.offset : end]
        self.offset = end
        return value

    def ints(self, layout: struct.Struct) -> tuple[int, ...]:
        return tuple(int(n) for n in layout.unpack(self.take(layout.size)))

    def float64(self) -> float:
        (value,) = F64.unpack(self.take(F64.size))
        return float(value)

    def text(self, length: struct.Struct, what: str) -> str:
        (n,) = self.ints(length)
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"{what} is not UTF-8") from None

    def member_id(self) -> str:
        member_id = self.text(LENGTH8, "member id")
        if not member_id:
            raise _bad("an empty member id")
        return member_id

    def member(self) -> MemberRecord:
        try:
            origin, self.offset = decode_origin_untrusted(self.data, self.offset)
        except RemoteProtocolError as exc:
            raise _bad(str(exc)) from None
        member_id = self.member_id()
        connected_at = self.float64()
        try:
            return MemberRecord(origin, member_id, connected_at)
        except LocalProtocolError as exc:
            raise _bad(str(exc)) from None

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.offset)

    def end(self) -> None:
        if self.offset != len(self.data):
            raise _bad(f"{len(self.data) - self.offset} bytes after the body")


def decode_body_untrusted(kind: Kind, data: bytes) -> Body:
    """The body of an opened envelope of ``kind``; :class:`RemoteProtocolError`
    (``bad_envelope``) for anything its layout or bounds do not allow."""
    reader = _Reader(data)
    try:
        body = _DECODERS[kind](reader)
    except LocalProtocolError as exc:
        raise _bad(f"{kind.name}: {exc}") from None
    reader.end()
    return body


def _message(reader: _Reader) -> Message:
    origin = reader.member()
    return Message(origin, reader.rest())


def _presence(reader: _Reader) -> Presence:
    event, reason = reader.ints(PRESENCE_HEAD)
    if event not in _EVENTS or reason not in _REASONS:
        raise _bad(f"PRESENCE event {event} reason {reason}")
    return Presence(PresenceEvent(event), LeaveReason(reason), reader.member())


def _snapshot(reader: _Reader) -> Snapshot:
    head = SNAPSHOT_HEAD.unpack(reader.take(SNAPSHOT_HEAD.size))
    version, part, parts, count, nonce, msg_seq, kick_seq = head
    if not 0 <= part < parts or count > MAX_SNAPSHOT_MEMBERS:
        raise _bad(f"SNAPSHOT part {part} of {parts}, {count} members")
    members = tuple(reader.member() for _ in range(count))
    return Snapshot(version, part, parts, members, nonce, msg_seq, kick_seq)


def _snapshot_request(reader: _Reader) -> SnapshotRequest:
    nonce = reader.take(NONCE_BYTES)
    (name_len,) = reader.ints(LENGTH8)
    target = relay_name_untrusted(reader.take(name_len)) if name_len else ""
    return SnapshotRequest(nonce, target)


def _kick(reader: _Reader) -> Kick:
    (name_len,) = reader.ints(LENGTH8)
    target = relay_name_untrusted(reader.take(name_len))
    member_id = reader.member_id()
    ban_s, scope = KICK_TAIL.unpack(reader.take(KICK_TAIL.size))
    if scope not in _SCOPES:
        raise _bad(f"KICK scope {scope}")
    ban = None if math.isnan(ban_s) else float(ban_s)
    return Kick(target, member_id, ban, KickScope(scope))


def _kick_reply(reader: _Reader) -> KickReply:
    epoch, seq, status, count = reader.ints(KICK_REPLY_HEAD)
    if status not in _STATUSES:
        raise _bad(f"KICK_REPLY status {status}")
    removed = tuple(reader.member_id() for _ in range(count))
    message = reader.text(LENGTH16, "kick reply message")
    return KickReply(epoch, seq, KickStatus(status), removed, message)


_DECODERS: dict[Kind, Callable[[_Reader], Body]] = {
    Kind.MSG: _message,
    Kind.PRESENCE: _presence,
    Kind.SNAPSHOT: _snapshot,
    Kind.SNAPSHOT_REQUEST: _snapshot_request,
    Kind.KICK: _kick,
    Kind.KICK_REPLY: _kick_reply,
}
