"""Two channels wired through an in-memory network that loses, duplicates and reorders
DATA plaintexts, on a mock clock and a seeded random: deterministic, no sockets.

Each side's frames are packed into plaintexts (``frames_to_send``), encoded, and
carried whole: a loss loses every frame of the DATA, as on the wire. Reordering is
netem's: a reordered datagram skips the one-way delay and overtakes the others.
"""

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from mcrelay.protocol.secure.channel import Channel, Role
from mcrelay.protocol.secure.channel_events import Event, MessageDelivered
from mcrelay.protocol.secure.frames import (
    MAX_PLAINTEXT_BYTES,
    Abandon,
    Ack,
    Fragment,
    decode_frames_untrusted,
    encode_frames,
)
from mcrelay.protocol.secure.receiving import HELD_MESSAGES
from mcrelay.protocol.secure.sending import FRAGMENT_WINDOW, MESSAGE_WINDOW

CLIENT, RELAY = 0, 1


@dataclass
class Side:
    channel: Channel
    epoch: int
    delivered: list[bytes] = field(default_factory=list)
    events: list[tuple[float, Event]] = field(default_factory=list)
    datagrams: int = 0
    first_sent: dict[int, float] = field(default_factory=dict)
    """msg_seq -> when its first fragment went out."""


@dataclass(order=True)
class _Transit:
    arrival: float
    order: int
    to: int = field(compare=False)
    plaintext: bytes = field(compare=False)
    epoch: int = field(compare=False)


class Link:
    def __init__(
        self,
        *,
        seed: int = 0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay_s: float = 0.005,
        initial_rtt_s: float | None = 0.010,
        client: Channel | None = None,
        relay: Channel | None = None,
    ) -> None:
        """``initial_rtt_s``: the handshake's round trip, given to both channels (two delays)."""
        self.now = 0.0
        self.random = random.Random(seed)
        self.loss, self.duplicate, self.reorder, self.delay_s = loss, duplicate, reorder, delay_s
        self.sides = [
            Side(client or Channel(Role.CLIENT, peer_epoch=2, initial_rtt_s=initial_rtt_s), 1),
            Side(relay or Channel(Role.RELAY, peer_epoch=1, initial_rtt_s=initial_rtt_s), 2),
        ]
        self._transit: list[_Transit] = []
        self._order = 0
        self.max_held = 0
        self.lost = self.duplicated = self.reordered = 0
        self.drop_next: Callable[[int, bytes], bool] = lambda _to, _plaintext: False
        """A test's own filter: True drops that DATA (after the random losses)."""

    @property
    def client(self) -> Channel:
        return self.sides[CLIENT].channel

    @property
    def relay(self) -> Channel:
        return self.sides[RELAY].channel

    def send(self, side: int, body: bytes) -> int:
        return self.sides[side].channel.send(body, self.now)

    def flush(self) -> None:
        """Every DATA both sides have ready now, into the network."""
        for index, side in enumerate(self.sides):
            while frames := side.channel.frames_to_send(self.now):
                for frame in frames:
                    if isinstance(frame, Fragment):
                        side.first_sent.setdefault(frame.msg_seq, self.now)
                plaintext = encode_frames(frames)
                assert len(plaintext) <= MAX_PLAINTEXT_BYTES
                side.datagrams += 1
                copies = 2 if self.random.random() < self.duplicate else 1
                self.duplicated += copies - 1
                for _ in range(copies):
                    if self.random.random() < self.loss or self.drop_next(1 - index, plaintext):
                        self.lost += 1
                        continue
                    delay = self.delay_s
                    if self.random.random() < self.reorder:
                        self.reordered += 1
                        delay = self.random.uniform(0, self.delay_s / 2)
                    self._order += 1
                    heapq.heappush(
                        self._transit,
                        _Transit(self.now + delay, self._order, 1 - index, plaintext, side.epoch),
                    )
            self._collect(side)
            self._check_windows(side.channel)

    def _collect(self, side: Side) -> None:
        while (event := side.channel.next_event()) is not None:
            side.events.append((self.now, event))
            if isinstance(event, MessageDelivered):
                side.delivered.append(event.body)

    def _check_windows(self, channel: Channel) -> None:
        stats = channel.statistics()
        assert stats.in_flight <= MESSAGE_WINDOW
        assert stats.fragments_in_flight <= FRAGMENT_WINDOW
        assert stats.held <= HELD_MESSAGES
        self.max_held = max(self.max_held, stats.held)

    def next_time(self) -> float | None:
        times = [side.channel.next_deadline() for side in self.sides]
        if self._transit:
            times.append(self._transit[0].arrival)
        return min((time for time in times if time is not None), default=None)

    def step(self) -> bool:
        """Move the clock to the next arrival or deadline and act on it; False when idle."""
        self.flush()
        time = self.next_time()
        if time is None:
            return False
        self.now = max(self.now, time)
        while self._transit and self._transit[0].arrival <= self.now:
            transit = heapq.heappop(self._transit)
            side = self.sides[transit.to]
            frames = decode_frames_untrusted(transit.plaintext).frames
            channel_frames = [f for f in frames if isinstance(f, Fragment | Ack | Abandon)]
            side.channel.receive(channel_frames, self.now, epoch=transit.epoch)
        for side in self.sides:
            side.channel.poll(self.now)
        self.flush()
        return True

    def run(self, until: Callable[[], bool] | None = None, *, limit_s: float = 60.0) -> None:
        """Step until ``until()`` holds (or everything is idle), at most ``limit_s`` in."""
        end = self.now + limit_s
        while not (until is not None and until()) and self.now < end:
            if not self.step():
                break
