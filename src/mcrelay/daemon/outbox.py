"""What the relay sends: at once when nothing waits, else in one bounded queue, in order.

A copy of a message is sent at once, without blocking, when nothing waits; otherwise,
and for every notice (a join or a leave makes one per member, so thousands at once),
it waits in one queue that :meth:`Outbox.run` drains a batch per turn, so the loop
keeps receiving. One queue, so a leave notice never overtakes the leaver's last
copies; notices and copies are bounded apart (copies in bytes too: one can be 44 KB),
so a burst of either cannot crowd out the other. Past a bound the datagram is dropped and counted, never queued without end.
"""

import socket
from collections import Counter, deque
from collections.abc import Callable, Sequence

import trio

from mcrelay.core.stats import RelayCounters
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason

SEND_BATCH_DATAGRAMS = 256
"""Datagrams sent per turn of the send task before it yields."""

Drop = Callable[[DropReason, Address, object, int], None]


class Outbox:
    def __init__(
        self,
        sock: socket.socket,
        counters: RelayCounters,
        drop: Drop,
        bound: Callable[[], int],
        bytes_bound: Callable[[], int],
    ) -> None:
        """``bound()`` is how many notices, and apart how many copies, may wait;
        ``bytes_bound()`` how many bytes of copies may wait."""
        self._sock = sock
        self._counters = counters
        self._drop = drop
        self._bound = bound
        self._bytes_bound = bytes_bound
        self.copy_bytes = 0
        """Bytes of the copies waiting (notices are small, and bounded by count alone)."""
        self._queue: deque[tuple[bytes, Address, bool]] = deque()
        self._queued: Counter[bool] = Counter()
        """Datagrams in the queue: notices under True, copies under False."""
        self._added = trio.Event()
        self._emptied = trio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def notify(self, datagram: bytes, address: Address) -> bool:
        """Queue a notice for the send task; False (dropped, counted) past its bound.

        Notices are not sent from here: a join or leave makes one per member, and
        thousands of sends in a row would keep the loop from receiving."""
        return self._enqueue(datagram, address, notice=True)

    def notify_all(self, notices: Sequence[tuple[bytes, Address]]) -> None:
        """Queue many notices; at the bound the rest are dropped, counted together
        under the first address that missed its notice (no work per lost notice)."""
        room = max(self._bound() - self._queued[True], 0)
        for datagram, address in notices[:room]:
            self._append(datagram, address, notice=True)
        if len(notices) > room:
            lost = len(notices) - room
            self._drop(DropReason.SEND_QUEUE_FULL, notices[room][1], "backlog full", lost)

    def send(self, datagram: bytes, address: Address) -> bool:
        """Send a copy now if nothing waits, else queue it; False if dropped."""
        if not self._queue:
            sent = self._sendto(datagram, address)
            if sent is not None:
                return sent
        return self._enqueue(datagram, address, notice=False)

    async def run(self) -> None:
        """Drain the queue as the socket takes it."""
        while True:
            if not self._queue:
                self._added = trio.Event()
                await self._added.wait()
            await trio.lowlevel.wait_writable(self._sock)
            self._send_queued()

    async def wait_empty(self) -> None:
        while self._queue:
            self._emptied = trio.Event()
            await self._emptied.wait()

    def _enqueue(self, datagram: bytes, address: Address, *, notice: bool) -> bool:
        if self._queued[notice] >= self._bound() or (
            not notice and self.copy_bytes + len(datagram) > self._bytes_bound()
        ):
            self._drop(DropReason.SEND_QUEUE_FULL, address, None, 1)
            return False
        self._append(datagram, address, notice=notice)
        return True

    def _append(self, datagram: bytes, address: Address, *, notice: bool) -> None:
        self._queued[notice] += 1
        if not notice:
            self.copy_bytes += len(datagram)
        self._queue.append((datagram, address, notice))
        self._added.set()

    def _sendto(self, datagram: bytes, address: Address) -> bool | None:
        """Send now: True when sent, False when refused (counted), None when it would block."""
        try:
            self._sock.sendto(datagram, address)
        except BlockingIOError:
            return None
        except OSError as exc:
            self._drop(DropReason.SEND_FAILED, address, exc, 1)
            return False
        self._counters.datagrams_out += 1
        self._counters.bytes_out += len(datagram)
        return True

    def _send_queued(self) -> None:
        for _ in range(SEND_BATCH_DATAGRAMS):
            if not self._queue:
                self._emptied.set()
                return
            datagram, address, notice = self._queue[0]
            if self._sendto(datagram, address) is None:
                return
            self._queue.popleft()
            self._queued[notice] -= 1
            if not notice:
                self.copy_bytes -= len(datagram)
        if not self._queue:
            self._emptied.set()
