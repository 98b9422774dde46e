"""Hostile or unlucky sequences a review found: each of these once broke the relay."""

import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived, PeerPresent
from mcrelay.daemon.legacy import profile as profile_module
from mcrelay.daemon.legacy import sealing
from mcrelay.daemon.legacy.profile import identity
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.protocol.errors import LocalProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft, RelayedMessage
from mcrelay.sockets import open_relay_socket
from support import (
    LOOPBACK,
    dropped,
    hold_decryption,
    join,
    next_event,
    raw_peer,
    relay_config,
    running_relay,
    settled,
    wait_until,
)

Keys = list[rsa.RSAPrivateKey]


async def test_a_recipient_openssl_refuses_costs_one_copy_not_the_daemon(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = keys[3].public_key().public_numbers()
    real = legacy.relayed_message

    def picky(key: rsa.RSAPublicKey, sender: Address, plaintext: bytes) -> bytes:
        if key.public_numbers() == refused:
            raise ValueError("Encryption failed")
        return real(key, sender, plaintext)

    monkeypatch.setattr(legacy, "relayed_message", picky)
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a, join(relay, keys[2]) as b:
            async with join(relay, keys[3]):
                await a.send("still here")
                while (event := await next_event(b)) != MessageReceived(a.address, b"still here"):
                    assert isinstance(event, PeerJoined | PeerPresent)
                await wait_until(lambda: dropped(relay, "encrypt_failed") == 1)


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


async def test_a_recipient_that_re_keys_while_a_message_is_in_flight_can_read_it(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = hold_decryption(monkeypatch)
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with raw_peer(relay, keys[2]) as b, join(relay, keys[1]) as a:
            await b.register()
            await a.send("for your new key")
            await wait_until(lambda: relay.statistics().pending_relays == 1)
            await b.send(legacy.client_key(keys[3].public_key()))  # re-key meanwhile
            await wait_until(lambda: relay.roster.holds(identity(keys[3].public_key(), b.address)))
            gate.set()
            relayed: list[RelayedMessage] = []
            while not relayed:
                relayed = [e for e in await b.receive() if isinstance(e, RelayedMessage)]
            plaintext = crypto.decrypt_concatenated_untrusted(keys[3], relayed[0].ciphertext)
            assert plaintext == b"for your new key"


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


async def test_a_recipient_re_keying_during_every_seal_delays_a_message_once_not_forever(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = crypto.public_key_to_pem(keys[2].public_key())
    resealed: list[object] = []
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a, join(relay, keys[2]) as b:
            await wait_until(lambda: relay.roster.at(b.address) is not None)
            recipient = relay.roster.at(b.address)
            assert recipient is not None

            def rekey() -> None:
                # The same key in a new object: to the relay, a re-key (as a spoofed one is).
                key = serialization.load_pem_public_key(pem)
                assert isinstance(key, rsa.RSAPublicKey)
                recipient.identity = identity(key, b.address)

            def open_then_rekey(*args: Any) -> Any:
                opened = real_open(*args)
                rekey()
                return opened

            def seal_then_rekey(*args: Any) -> Any:
                resealed.append(args)
                sealed = real_seal(*args)
                rekey()
                return sealed

            real_open, real_seal = sealing.open_and_seal, sealing.seal_batch
            monkeypatch.setattr(profile_module, "open_and_seal", open_then_rekey)
            monkeypatch.setattr(profile_module, "seal_batch", seal_then_rekey)
            await a.send("hello")
            while (event := await next_event(b)) != MessageReceived(a.address, b"hello"):
                assert isinstance(event, PeerJoined | PeerPresent)
            assert len(resealed) == 1
            assert settled(relay)


async def test_a_message_the_crypto_stage_has_no_room_for_is_refused_at_its_first_fragment(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past saturation the loop spent its time on messages it would drop at completion:
    now a message that finds the stage full is refused before reassembly (no buffer,
    no task), each of its fragments counted as overloaded."""
    gate = hold_decryption(monkeypatch)
    config = relay_config(relay_key_file, max_pending_relays=1)
    async with running_relay(config) as relay:
        async with join(relay, keys[1]) as a, join(relay, keys[2]) as b:
            async with raw_peer(relay, keys[3]) as c:
                await c.register()
                await a.send("held in the workers")
                await wait_until(lambda: relay.statistics().pending_relays == 1)
                await c.send(*c.message(b"no room"))
                await wait_until(lambda: dropped(relay, "overloaded") == 2)
                assert relay.statistics().reassembly_in_flight == 0
                assert relay.statistics().reassembly_bytes == 0
                gate.set()
                while (event := await next_event(b)) != MessageReceived(
                    a.address, b"held in the workers"
                ):
                    assert isinstance(event, PeerJoined | PeerPresent)
                await c.send(*c.message(b"room again", msg_id=b"\x00\x00\x00\x02"))
                while (event := await next_event(b)) != MessageReceived(c.address, b"room again"):
                    assert isinstance(event, PeerJoined | PeerPresent)
