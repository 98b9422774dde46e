"""A chat whose stdout is read slowly, in both profiles: nothing received is lost in
silence. The secure chat holds the relay's messages back and shows every one it
acknowledged; the legacy chat, which has nothing to hold back with, says how many it
dropped and exits 1 (the secure one showed 1,472 of 3,000 and exited 0, found by
review)."""

import io
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from stub_secure_relay import LOOPBACK, served_relay
from test_secure_cli import flags

import mcrelay.cli.secure_chat as secure_chat
import mcrelay.client.secure as secure
import mcrelay.client.secure_events as secure_events
from mcrelay.cli.environment import Environment
from mcrelay.cli.main import run_command
from mcrelay.cli.status import ExitStatus
from mcrelay.client import participant
from mcrelay.client.secure_events import EVENT_OVERHEAD_BYTES
from mcrelay.protocol.legacy.events import PeerJoined
from mcrelay.protocol.secure.messages import RelayedChat, encode_message
from mcrelay.protocol.secure.origins import RELAY_ORIGIN
from support import WAIT_S, join, next_event, relay_config, running_relay, wait_until

QUEUE_EVENTS = 4


class StuckOutput(io.StringIO):
    """A stdout nobody reads until :attr:`reader` is set (a full pipe, Ctrl-S)."""

    def __init__(self) -> None:
        super().__init__()
        self.reader = threading.Event()

    def write(self, text: str) -> int:
        self.reader.wait(WAIT_S)
        return super().write(text)


def chat_env(stdout: io.StringIO, stderr: io.StringIO) -> tuple[Environment, Callable[[], None]]:
    """An environment whose stdin ends when the returned function is called."""
    read_end, write_end = os.pipe()
    stdin = open(read_end, encoding="utf-8")  # noqa: SIM115 - closed by the test's end
    env = Environment(stdin=stdin, stdout=stdout, stderr=stderr, environ={})
    return env, partial(os.close, write_end)


async def test_a_legacy_chat_says_what_it_dropped_and_exits_1(
    relay_key_file: Path, keys: list[rsa.RSAPrivateKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(participant, "EVENT_QUEUE_EVENTS", QUEUE_EVENTS)
    emitted: list[object] = []
    emit = participant.Participant._emit
    peers: list[participant.Participant] = []

    def counted(self: participant.Participant, event: participant.ParticipantEvent) -> None:
        if self not in peers:
            emitted.append(event)
        emit(self, event)

    monkeypatch.setattr(participant.Participant, "_emit", counted)
    stdout, stderr = StuckOutput(), io.StringIO()
    env, end_input = chat_env(stdout, stderr)
    statuses: list[ExitStatus] = []
    async with running_relay(relay_config(relay_key_file)) as relay, join(relay, keys[1]) as a:
        peers.append(a)
        argv = ["chat", "--json", "--interface", LOOPBACK, "--port", str(relay.address[1])]
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _run(argv, env, statuses))
                assert isinstance(await next_event(a), PeerJoined)
                for n in range(10):
                    await a.send(f"m{n}")
                await wait_until(lambda: len(received(emitted)) == 10)
                stdout.reader.set()
                end_input()
    env.stdin.close()
    assert statuses == [ExitStatus.ERROR]
    shown = stdout.getvalue().splitlines()
    dropped = len(emitted) - len(shown)
    assert dropped >= len(emitted) - QUEUE_EVENTS - 1  # the queue, and the one written
    assert f"mcrelay: error: {dropped} events received" in stderr.getvalue()


def received(events: list[object]) -> list[participant.MessageReceived]:
    return [event for event in events if isinstance(event, participant.MessageReceived)]


async def _run(argv: list[str], env: Environment, statuses: list[ExitStatus]) -> None:
    statuses.append(await run_command(argv, env))


async def test_a_secure_chat_removed_while_it_held_back_shows_all_it_took_then_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It joined again 30 s later as if nothing were lost (found by review)."""
    monkeypatch.setattr(secure_events, "EVENT_QUEUE_BYTES", QUEUE_EVENTS * EVENT_OVERHEAD_BYTES)
    held: list[secure.SecureParticipant] = []

    @asynccontextmanager
    async def quick(**options: Any) -> AsyncIterator[secure.SecureParticipant]:
        async with secure.open_secure_participant(**options, session_timeout_s=1.0) as chat:
            held.append(chat)
            yield chat

    monkeypatch.setattr(secure_chat, "open_secure_participant", quick)
    stdout, stderr = StuckOutput(), io.StringIO()
    env, end_input = chat_env(stdout, stderr)
    texts = [f"m{n}".encode() for n in range(40)]
    statuses: list[ExitStatus] = []
    async with served_relay() as served:
        argv = ["chat", *flags(tmp_path, served.address[1]), "--json", "--stay"]
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _run(argv, env, statuses))
                await wait_until(lambda: len(served.relay.members) == 1)
                ((key, member),) = served.relay.members.items()
                channel = member.session.channel
                for text in texts:
                    body = encode_message(RelayedChat(RELAY_ORIGIN, text))
                    channel.send(body, trio.current_time(), bounded=False)
                await served._flush()
                await wait_until(lambda: channel.statistics().retransmissions > 0)
                del served.relay.members[key]  # removed: the relay falls silent
                served.relay.by_index.clear()
                await wait_until(lambda: held[0].closed is not None)
                stdout.reader.set()  # what it took is shown still
    end_input()
    env.stdin.close()
    assert statuses == [ExitStatus.ERROR]
    records = [json.loads(line) for line in stdout.getvalue().splitlines()]
    shown = [record["text"] for record in records if record["event"] == "message"]
    assert len(shown) >= QUEUE_EVENTS
    assert shown == [f"m{n}" for n in range(len(shown))]
    assert "removed this client as unreachable" in stderr.getvalue()
