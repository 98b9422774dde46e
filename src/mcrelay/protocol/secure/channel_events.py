"""What a secure channel tells its caller (:meth:`Channel.next_event`)."""

from dataclasses import dataclass

from mcrelay.protocol.errors import DropReason


@dataclass(frozen=True, slots=True)
class MessageDelivered:
    """A message of the peer, complete, in msg_seq order."""

    body: bytes


@dataclass(frozen=True, slots=True)
class MessageAcknowledged:
    """The peer holds message ``message_id`` (hop by hop)."""

    message_id: int


@dataclass(frozen=True, slots=True)
class MessageAbandoned:
    """The client gave message ``message_id`` up at its deadline and sent ABANDON."""

    message_id: int


@dataclass(frozen=True, slots=True)
class MessageFailed:
    """The relay could not deliver message ``message_id``: its peer is ``unreachable``
    (deadline passed) or ``replaced`` (a new epoch); the caller removes the member."""

    message_id: int
    reason: DropReason


SendEvent = MessageAcknowledged | MessageAbandoned | MessageFailed
Event = MessageDelivered | SendEvent
