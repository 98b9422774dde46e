"""Helpers for driving one secure channel by hand, with explicit times."""

from mcrelay.protocol.secure.channel import Channel, ChannelFrame, Role
from mcrelay.protocol.secure.channel_events import Event
from mcrelay.protocol.secure.frames import MAX_PLAINTEXT_BYTES, Ack, Fragment, encode_frames

PEER_EPOCH = 7


def client(initial_rtt_s: float | None = 0.1) -> Channel:
    return Channel(Role.CLIENT, peer_epoch=PEER_EPOCH, initial_rtt_s=initial_rtt_s)


def relay(initial_rtt_s: float | None = 0.1) -> Channel:
    return Channel(Role.RELAY, peer_epoch=PEER_EPOCH, initial_rtt_s=initial_rtt_s)


def drain(channel: Channel, now: float) -> list[ChannelFrame]:
    """Every frame the channel has for its peer at ``now``, over as many DATAs as it takes."""
    frames: list[ChannelFrame] = []
    while batch := channel.frames_to_send(now):
        assert len(encode_frames(batch)) <= MAX_PLAINTEXT_BYTES
        frames += batch
    return frames


def events(channel: Channel) -> list[Event]:
    out = []
    while (event := channel.next_event()) is not None:
        out.append(event)
    return out


def fragments(frames: list[ChannelFrame]) -> list[tuple[int, int]]:
    """(msg_seq, index) of each FRAGMENT, in order."""
    return [(frame.msg_seq, frame.index) for frame in frames if isinstance(frame, Fragment)]


def acks(frames: list[ChannelFrame]) -> list[Ack]:
    return [frame for frame in frames if isinstance(frame, Ack)]


def ack(msg_seq: int, count: int, received: set[int] | None = None) -> Ack:
    """An ACK of ``received`` (all ``count`` fragments when None)."""
    return Ack(msg_seq, count, frozenset(range(count) if received is None else received))


def feed(channel: Channel, now: float, *frames: ChannelFrame) -> None:
    channel.receive(frames, now, epoch=channel.peer_epoch)


def whole(msg_seq: int, body: bytes) -> list[Fragment]:
    """``body`` as the fragments of message ``msg_seq``."""
    pieces = [body[start : start + 1150] for start in range(0, len(body), 1150)] or [b""]
    return [Fragment(msg_seq, index, len(pieces), piece) for index, piece in enumerate(pieces)]
