"""Hostile or unlucky sequences a review found: each of these once broke the relay."""

import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.protocol.errors import LocalProtocolError
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from mcrelay.sockets import open_relay_socket
from support import (
    LOOPBACK,
    dropped,
    join,
    next_event,
    raw_peer,
    relay_config,
    running_relay,
    settled,
    wait_until,
)

Keys = list[rsa.RSAPrivateKey]


async def test_registrations_from_one_host_are_rate_limited(
    relay_key_file: Path, keys: Keys
) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        burst = relay.config.registrations_per_host_burst
        for _ in range(burst + 5):
            async with raw_peer(relay, keys[2]) as raw:
                await raw.send(legacy.client_key(keys[2].public_key()))
        await wait_until(lambda: relay.counters.datagrams_in == burst + 5)
        assert dropped(relay, "rate_limited") >= 4
        assert len(relay.roster) <= burst + 1


async def test_registration_limits_are_settings_a_reload_changes(
    relay_key_file: Path, keys: Keys
) -> None:
    config = relay_config(
        relay_key_file,
        max_clients_per_host=1,
        registrations_per_host_burst=1,
        registrations_per_host_per_s=0.001,
    )
    key = keys[2].public_key()

    async def register_two() -> None:
        for _ in range(2):
            async with raw_peer(relay, keys[2]) as raw:
                await raw.send(legacy.client_key(key))

    async with running_relay(config) as relay:
        await register_two()
        await wait_until(lambda: relay.counters.datagrams_in == 2)
        assert (len(relay.roster), dropped(relay, "rate_limited")) == (1, 1)
        faster = replace(
            config, registrations_per_host_burst=5, registrations_per_host_per_s=1000.0
        )
        relay.reconfigure(faster)
        await trio.sleep(0.01)
        await register_two()
        await wait_until(lambda: relay.counters.datagrams_in == 4)
        assert (len(relay.roster), dropped(relay, "registry_full")) == (1, 2)
        relay.reconfigure(replace(faster, max_clients_per_host=3))
        await register_two()
        await wait_until(lambda: len(relay.roster) == 3)


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


async def test_a_client_back_before_its_leave_was_announced_is_seen_leaving_then_joining(
    relay_key_file: Path, keys: Keys
) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a, raw_peer(relay, keys[2]) as raw:
            await raw.register()
            assert await next_event(a) == PeerJoined(raw.address)
            client = relay.roster.at(raw.address)
            assert client is not None
            relay.roster.message_started(client)  # as if a message of its were being relayed
            await raw.send(legacy.disconnect())
            await wait_until(lambda: relay.roster.at(raw.address) is None)
            await raw.send(legacy.client_key(keys[2].public_key()))
            assert await next_event(a) == PeerLeft(raw.address)
            assert await next_event(a) == PeerJoined(raw.address)
            assert client.leaving is None


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
