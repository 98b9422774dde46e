"""Two channels over a lossy, duplicating, reordering link: every message exactly once,
in order, within its deadline, and the windows hold all along (``link.Link`` checks
them after every DATA)."""

import pytest

from mcrelay.protocol.secure.channel_events import (
    MessageAbandoned,
    MessageAcknowledged,
    MessageDelivered,
    MessageFailed,
)
from mcrelay.protocol.secure.frames import MAX_FRAGMENT_BYTES
from mcrelay.protocol.secure.receiving import HELD_MESSAGES
from mcrelay.protocol.secure.sending import MESSAGE_DEADLINE_S

from .link import Link

MESSAGES = {2: 150, 4: 100, 16: 40, 58: 16}
"""Messages each way, per fragment count."""


def body(number: int, fragments: int) -> bytes:
    """A CHAT of exactly ``fragments`` fragments that says its number first."""
    head = bytes([1]) + number.to_bytes(4, "big")
    size = (fragments - 1) * MAX_FRAGMENT_BYTES + 1 + number % 100
    return head + bytes((number + i) % 251 for i in range(size - len(head)))


def exchange(link: Link, fragments: int, count: int) -> list[list[bytes]]:
    """``count`` messages each way, queued as the window allows, until all are settled."""
    sent: list[list[bytes]] = [[body(n, fragments) for n in range(count)] for _ in link.sides]
    waiting = [list(bodies) for bodies in sent]

    def done() -> bool:
        for side, queue in enumerate(waiting):
            while queue and link.sides[side].channel.can_send:
                link.send(side, queue.pop(0))
        return not any(waiting) and all(
            len(side.delivered) == count and side.channel.statistics().in_flight == 0
            for side in link.sides
        )

    link.run(done, limit_s=120.0)
    return sent


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("loss", [0.05, 0.10])
@pytest.mark.parametrize("fragments", [2, 4, 16, 58])
def test_exactly_once_in_order_within_the_deadline(fragments: int, loss: float, seed: int) -> None:
    link = Link(seed=seed, loss=loss, duplicate=0.02, reorder=0.25)
    count = MESSAGES[fragments]
    sent = exchange(link, fragments, count)
    assert link.lost
    assert link.duplicated
    assert link.reordered
    for index, side in enumerate(link.sides):
        peer = link.sides[1 - index]
        assert side.delivered == sent[1 - index]
        assert not any(isinstance(e, MessageAbandoned | MessageFailed) for _, e in peer.events)
        acknowledged = [e.message_id for _, e in peer.events if isinstance(e, MessageAcknowledged)]
        assert sorted(acknowledged) == list(range(count))
        delivered_at = [time for time, e in side.events if isinstance(e, MessageDelivered)]
        for msg_seq, time in enumerate(delivered_at):
            assert time - peer.first_sent[msg_seq] < MESSAGE_DEADLINE_S
    assert link.max_held <= HELD_MESSAGES
