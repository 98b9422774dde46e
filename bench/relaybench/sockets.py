"""Many client sockets on loopback, and registering them with the relay."""

import selectors
import socket
import time

from mcrelay.protocol import legacy
from relaybench import wire

RETRY_S = 1.0
"""A client that got no answer asks again after this long (as the protocol's clients do)."""
REGISTER_TIMEOUT_S = 30.0
DRAIN_BATCH = 64
"""Datagrams read from one socket per wake-up, at most."""
KEEPALIVE_S = 5.0
"""Clients that may be silent keep alive this often (the relay's timeout is 30 s by default)."""


def open_sockets(count: int, host: str, receive_buffer_bytes: int) -> list[socket.socket]:
    """Non-blocking UDP sockets on ``host``, each with its own ephemeral port (its identity).

    They only ever send unicast to the relay on loopback, so no multicast option applies."""
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        sock.bind((host, 0))
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def drain(sock: socket.socket) -> list[bytes]:
    """What is waiting on ``sock``, up to ``DRAIN_BATCH`` datagrams."""
    found = []
    for _ in range(DRAIN_BATCH):
        try:
            found.append(sock.recv(65536))
        except BlockingIOError:
            break
    return found


def register(
    sockets: list[socket.socket],
    relay: tuple[str, int],
    datagram: bytes,
    pinned_relay_key: bytes,
) -> None:
    """Send ``datagram`` (key + key request) from each socket until the relay answers each.

    Every answer must carry the pinned relay key; a socket without an answer asks
    again every second, for at most ``REGISTER_TIMEOUT_S``."""
    by_fd = {sock.fileno(): sock for sock in sockets}
    waiting = dict(by_fd)
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + REGISTER_TIMEOUT_S
    try:
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(waiting)} of {len(sockets)} clients got no relay key")
            for sock in waiting.values():
                sock.sendto(datagram, relay)
            retry_at = time.monotonic() + RETRY_S
            while waiting and (left := retry_at - time.monotonic()) > 0:
                for key, _events in selector.select(left):
                    for data in drain(by_fd[key.fd]):
                        found = wire.relay_key_untrusted(data)
                        if found is None:
                            continue
                        if found != pinned_relay_key:
                            raise RuntimeError("a relay answered with another key than ours")
                        waiting.pop(key.fd, None)
    finally:
        selector.close()


class Keepalive:
    """KEEPALIVE from every socket once ``KEEPALIVE_S`` has passed since the last round."""

    def __init__(self, sockets: list[socket.socket], relay: tuple[str, int]) -> None:
        self._sockets = sockets
        self._relay = relay
        self._datagram = legacy.keepalive()
        self._last = time.monotonic()

    def when_due(self) -> None:
        if time.monotonic() - self._last < KEEPALIVE_S:
            return
        self._last = time.monotonic()
        for sock in self._sockets:
            try:
                sock.sendto(self._datagram, self._relay)
            except BlockingIOError:
                continue
