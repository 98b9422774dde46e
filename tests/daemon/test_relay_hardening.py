"""Hostile or unlucky sequences a review found: each of these once broke the relay."""

import socket
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.protocol.errors import LocalProtocolError
from mcrelay.protocol.legacy.events import PeerLeft
from mcrelay.sockets import open_relay_socket
from support import (
    LOOPBACK,
    dropped,
    join,
    next_event,
    relay_config,
    running_relay,
    settled,
    wait_until,
)

Keys = list[rsa.RSAPrivateKey]


class StalledSocket:
    """The relay's socket, but ``sendto`` would block while ``stalled`` (a full NIC queue)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.stalled = True

    def sendto(self, data: bytes, address: Address) -> int:
        if self.stalled:
            raise BlockingIOError
        return self.sock.sendto(data, address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


async def test_a_full_notice_backlog_counts_every_lost_notice_and_the_rest_go_out(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_relay(relay_config(relay_key_file, send_queue_datagrams=4)) as relay:
        stalled = StalledSocket(relay.outbox._sock)
        monkeypatch.setattr(relay.outbox, "_sock", stalled)
        relay.broadcast(b"notice", [("127.0.0.1", 9)] * 10)
        # Four wait in the backlog; the other six are lost, and counted.
        assert dropped(relay, "send_queue_full") == 6
        assert relay.statistics().send_queue == 4
        stalled.stalled = False
        await wait_until(lambda: settled(relay))
        assert relay.counters.datagrams_out == 4


def test_a_second_relay_on_the_same_port_cannot_start() -> None:
    sock, _ = open_relay_socket(
        group="224.1.1.1", port=0, interface=LOOPBACK, receive_buffer_bytes=65536
    )
    with sock:
        taken = sock.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            open_relay_socket(
                group="224.1.1.1", port=taken, interface=LOOPBACK, receive_buffer_bytes=65536
            )


async def test_the_participant_refuses_control_words_and_re_registers_when_forgotten(
    relay_key_file: Path, keys: Keys
) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1], keepalive_interval_s=0.05) as a:
            for word in ("DISCONNECT", "CONNECT"):
                with pytest.raises(LocalProtocolError):
                    await a.send(word)
            relay.roster.remove(format_address(a.address), "timeout")  # as after a restart
            await wait_until(lambda: relay.roster.at(a.address) is not None)


async def test_a_leave_notice_waits_behind_the_leavers_queued_copies(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a, join(relay, keys[2]) as b:
            stalled = StalledSocket(relay.outbox._sock)
            monkeypatch.setattr(relay.outbox, "_sock", stalled)
            await a.send("last words")
            await wait_until(lambda: relay.outbox._queued[False] == 1)  # the copy for b waits
            relay.kick(format_address(a.address))
            stalled.stalled = False
            seen: list[object] = []
            while (event := await next_event(b)) != PeerLeft(a.address):
                seen.append(event)
            assert MessageReceived(a.address, b"last words") in seen
