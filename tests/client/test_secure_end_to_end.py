"""Secure clients against the real relay (``serve``) on loopback: chat between two,
presence, DISCONNECT, a legacy member beside them, and the CLI's trust on first use
and refusal of a changed key."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.cli.status import ExitStatus
from mcrelay.client.secure import SecureParticipant, open_secure_participant
from mcrelay.client.secure_events import SecureEvent
from mcrelay.client.secure_files import hold_identity
from mcrelay.daemon.relay import Relay
from mcrelay.daemon.secure.keyfile import load_or_create_secure_key
from mcrelay.protocol.secure.client_events import ChatReceived, PresenceChanged
from mcrelay.protocol.secure.keys import KeyPair, client_id, encode_key, parse_private_key_text
from mcrelay.protocol.secure.messages import LeaveReason, PresenceEvent
from mcrelay.protocol.secure.origins import OriginKind
from support import (
    GROUP,
    LOOPBACK,
    WAIT_S,
    Console,
    join,
    relay_config,
    running_relay,
    wait_until,
)

OTHER_KEY = KeyPair.from_private(bytes([9] * 32))


@asynccontextmanager
async def secure_relay(
    tmp_path: Path, relay_key_file: Path
) -> AsyncIterator[tuple[Relay, KeyPair]]:
    secure_key_file = tmp_path / "relay-secure.key"
    config = relay_config(relay_key_file, secure_key_file=secure_key_file)
    async with running_relay(config) as relay:
        yield relay, load_or_create_secure_key(secure_key_file)


def secure_members(relay: Relay) -> int:
    return relay.statistics().profiles["secure"]["clients"]


async def next_of(participant: SecureParticipant, wanted: type) -> SecureEvent:
    with trio.fail_after(WAIT_S):
        async for event in participant.events:
            if isinstance(event, wanted):
                return event
    raise AssertionError(f"the events ended before a {wanted.__name__}")


async def test_two_secure_clients_chat_and_see_each_other(
    tmp_path: Path, relay_key_file: Path
) -> None:
    async with secure_relay(tmp_path, relay_key_file) as (relay, key):
        a_identity, b_identity = KeyPair.generate(), KeyPair.generate()
        async with open_secure_participant(
            destination=(LOOPBACK, relay.address[1]),
            interface=LOOPBACK,
            identity=a_identity,
            relay_key=key.public,
        ) as a:
            async with open_secure_participant(
                destination=(LOOPBACK, relay.address[1]),
                interface=LOOPBACK,
                identity=b_identity,
                relay_key=key.public,
            ) as b:
                joined = await next_of(a, PresenceChanged)
                assert isinstance(joined, PresenceChanged)
                assert joined.event == PresenceEvent.JOINED
                assert joined.origin.id == b_identity.public
                present = await next_of(b, PresenceChanged)
                assert isinstance(present, PresenceChanged)
                assert present.event == PresenceEvent.ALREADY_PRESENT
                assert present.origin.id == a_identity.public
                message_id = await a.send(b"hello, b")
                chat = await next_of(b, ChatReceived)
                assert isinstance(chat, ChatReceived)
                assert chat.text == b"hello, b"
                assert chat.origin.kind == OriginKind.SECURE_CLIENT
                assert chat.origin.id == a_identity.public
                with trio.fail_after(WAIT_S):
                    await a.wait_until(lambda: message_id not in a.pending)
                assert a.given_up == 0
            left = await next_of(a, PresenceChanged)
            assert isinstance(left, PresenceChanged)
            assert left.event == PresenceEvent.LEFT
            assert left.reason == LeaveReason.DISCONNECT
            assert left.origin.id == b_identity.public
            assert relay.secure is not None
            assert secure_members(relay) == 1


async def test_a_secure_client_and_a_legacy_one_talk(
    tmp_path: Path, relay_key_file: Path, keys: list[rsa.RSAPrivateKey]
) -> None:
    async with secure_relay(tmp_path, relay_key_file) as (relay, key):
        async with (
            open_secure_participant(
                destination=(LOOPBACK, relay.address[1]),
                interface=LOOPBACK,
                identity=KeyPair.generate(),
                relay_key=key.public,
            ) as secure,
            join(relay, keys[1]) as legacy,
        ):
            joined = await next_of(secure, PresenceChanged)
            assert isinstance(joined, PresenceChanged)
            assert joined.origin.kind == OriginKind.LEGACY_CLIENT
            await legacy.send(b"from legacy")
            chat = await next_of(secure, ChatReceived)
            assert isinstance(chat, ChatReceived)
            assert chat.text == b"from legacy"
            assert chat.origin.address == legacy.address


def cli_flags(tmp_path: Path, port: int) -> list[str]:
    return [
        "--secure",
        "--interface",
        LOOPBACK,
        "--relay",
        LOOPBACK,
        "--port",
        str(port),
        "--known-relays",
        str(tmp_path / "known_relays"),
        "--identity-file",
        str(tmp_path / "identity"),
    ]


async def test_send_trusts_on_first_use_then_refuses_a_changed_key(
    tmp_path: Path, relay_key_file: Path
) -> None:
    async with secure_relay(tmp_path, relay_key_file) as (relay, key):
        port = relay.address[1]
        first = Console()
        assert await first.run("send", *cli_flags(tmp_path, port), "one") == ExitStatus.OK
        assert (
            tmp_path / "known_relays"
        ).read_text() == f"127.0.0.1:{port} {encode_key(key.public)}\n"
        # The relay's key "changed": the file now remembers another one.
        (tmp_path / "known_relays").write_text(f"127.0.0.1:{port} {encode_key(OTHER_KEY.public)}\n")
        second = Console()
        status = await second.run("send", *cli_flags(tmp_path, port), "two")
        assert status == ExitStatus.KEY_MISMATCH
        line = second.err_lines()[-1]
        assert encode_key(key.public) in line
        assert encode_key(OTHER_KEY.public) in line
        assert relay.secure is not None
        assert secure_members(relay) == 0


async def test_without_relay_the_first_datagrams_go_to_the_group_then_unicast(
    tmp_path: Path, relay_key_file: Path
) -> None:
    async with secure_relay(tmp_path, relay_key_file) as (relay, key):
        async with open_secure_participant(
            destination=(GROUP, relay.address[1]),
            interface=LOOPBACK,
            identity=KeyPair.generate(),
        ) as participant:
            assert participant.connected is not None
            assert participant.connected.relay == (LOOPBACK, relay.address[1])
            assert participant.connected.relay_key == key.public
            assert participant.connection.relay == (LOOPBACK, relay.address[1])


async def test_a_kicked_chat_shows_the_notice_and_exits_1(
    tmp_path: Path, relay_key_file: Path
) -> None:
    async with secure_relay(tmp_path, relay_key_file) as (relay, _key):
        console = Console()
        argv = ["chat", *cli_flags(tmp_path, relay.address[1]), "--stay"]
        status: list[ExitStatus] = []

        async def chat() -> None:
            status.append(await console.run(*argv))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat)
            await wait_until(lambda: secure_members(relay) == 1)
            identity = parse_private_key_text((tmp_path / "identity").read_bytes())
            assert relay.kick(client_id(identity.public))
        assert status == [ExitStatus.ERROR]
        notice = json.loads(console.out_lines()[-1])
        assert notice == {"event": "notice", "notice": "kicked", "text": notice["text"]}
        assert "the relay kicked this client" in console.err_lines()[-1]


async def test_a_second_client_with_the_same_identity_is_refused_not_a_replacement(
    tmp_path: Path, relay_key_file: Path
) -> None:
    async with secure_relay(tmp_path, relay_key_file) as (relay, _):
        port = relay.address[1]
        first = Console()
        assert await first.run("send", *cli_flags(tmp_path, port), "made") == ExitStatus.OK
        with hold_identity(tmp_path / "identity"):  # as a running chat holds it
            second = Console()
            status = await second.run("send", *cli_flags(tmp_path, port), "refused")
            assert status == ExitStatus.USAGE
            assert "in use by another mcrelay client" in second.err_lines()[-1]
            assert "--identity-file" in second.err_lines()[-1]
        third = Console()
        assert await third.run("send", *cli_flags(tmp_path, port), "free again") == ExitStatus.OK
