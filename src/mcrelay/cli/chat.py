"""``mcrelay chat`` and ``mcrelay send``: a participant on the command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import BinaryIO

import trio

from mcrelay.cli.console import (
    LongLine,
    MessagesNotShown,
    print_events,
    read_bytes_line,
    send_lines,
)
from mcrelay.cli.daemon import add_network_flags
from mcrelay.cli.environment import Environment
from mcrelay.cli.options import (
    Parser,
    UsageError,
    add_flag,
    fingerprint,
    given_as_flag,
    positive_float,
    unicast_host,
)
from mcrelay.cli.secure_chat import (
    add_secure_flags,
    connect_timeout_s,
    run_secure_chat,
    run_secure_send,
)
from mcrelay.cli.signals import Stopped, cancel_on_signal
from mcrelay.cli.status import ExitStatus
from mcrelay.cli.text import json_text, message_bytes, printable
from mcrelay.client import (
    MessageReceived,
    Participant,
    ParticipantEvent,
    PeerPresent,
    open_participant,
)
from mcrelay.client.participant import KEEPALIVE_INTERVAL_S, REGISTER_TIMEOUT_S
from mcrelay.protocol.addresses import RELAY_ITSELF, format_address
from mcrelay.protocol.legacy import (
    CONNECT_WORD,
    DISCONNECT_WORD,
    MAX_MESSAGE_BYTES,
    max_message_bytes,
)
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from mcrelay.protocol.secure.messages import MAX_CHAT_BYTES
from mcrelay.protocol.secure.retries import GIVE_UP_AFTER_S

MAX_SEND_LINES = 10_000
"""Lines ``send -`` takes from stdin (it holds them all before the first goes)."""
MAX_SEND_BYTES = 16 * 1024 * 1024
"""Bytes of messages ``send -`` takes from stdin in all, for the same reason."""


def add_parsers(subparsers: argparse._SubParsersAction[Parser], environ: Mapping[str, str]) -> None:
    chat = subparsers.add_parser("chat", help="talk through the relay, one line a message")
    _add_client_flags(chat, environ)
    chat.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per event on stdout (the default when stdin is not a terminal)",
    )
    chat.add_argument(
        "--stay",
        action="store_true",
        help="keep receiving after the end of input, until interrupted",
    )
    chat.set_defaults(command=run_chat)
    send = subparsers.add_parser("send", help="send messages and leave")
    _add_client_flags(send, environ)
    send.add_argument(
        "text",
        nargs="+",
        help="one message per argument; a lone '-' reads one per stdin line (10000 lines and "
        "16 MiB at most, all read before any goes); a '-' beside other messages is sent as "
        "the text '-'",
    )
    send.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no 'registered as' line on stderr; errors are still printed",
    )
    send.set_defaults(command=run_send)


def _add_client_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    add_network_flags(parser, environ)
    add_flag(
        parser,
        environ,
        "--relay",
        unicast_host,
        None,
        "send unicast to this relay host instead of the group",
    )
    add_flag(
        parser,
        environ,
        "--relay-fingerprint",
        fingerprint,
        None,
        "refuse a relay whose key has another fingerprint",
    )
    add_flag(
        parser,
        environ,
        "--register-timeout",
        positive_float,
        None,
        "seconds to wait for the relay",
        default_text=f"{REGISTER_TIMEOUT_S:g}, or {GIVE_UP_AFTER_S:g} with --secure",
    )
    add_flag(
        parser,
        environ,
        "--keepalive-interval",
        positive_float,
        KEEPALIVE_INTERVAL_S,
        "seconds between keep-alives (legacy profile; the secure one sends them after 10 s "
        "without traffic)",
    )
    add_secure_flags(parser, environ)


def _check_profile(args: argparse.Namespace) -> None:
    if args.secure and given_as_flag(args, "relay_fingerprint"):
        raise UsageError(
            "--relay-fingerprint is for the legacy profile; with --secure, --relay-key"
        )
    if not args.secure and given_as_flag(args, "relay_key"):
        raise UsageError("--relay-key is for the secure profile: add --secure")


def _open(args: argparse.Namespace) -> AbstractAsyncContextManager[Participant]:
    return open_participant(
        destination=(args.relay or args.group, args.port),
        interface=args.interface,
        ttl=args.ttl,
        relay_fingerprint=args.relay_fingerprint,
        keepalive_interval_s=args.keepalive_interval,
        register_timeout_s=connect_timeout_s(args),
    )


def _announce(participant: Participant, env: Environment) -> None:
    assert participant.relay_address is not None
    env.say(
        f"mcrelay: registered as {format_address(participant.address)} with relay "
        f"{format_address(participant.relay_address)}, key {participant.relay_fingerprint}"
    )


def _render(event: ParticipantEvent, as_json: bool) -> str:
    if isinstance(event, MessageReceived):
        sender = format_address(event.sender)
        if as_json:
            return json_text({"event": "message", "from": sender, "text": event.text})
        return f"[{'relay' if event.sender == RELAY_ITSELF else sender}] {printable(event.text)}"
    kind = {PeerPresent: "present", PeerJoined: "joined", PeerLeft: "left"}[type(event)]
    if as_json:
        return json.dumps({"event": kind, "peer": format_address(event.peer)})
    return f"* {format_address(event.peer)} {kind}"


async def run_chat(args: argparse.Namespace, env: Environment) -> ExitStatus:
    _check_profile(args)
    if args.secure:
        return await run_secure_chat(args, env)
    held: list[Participant] = []
    async with trio.open_nursery() as nursery:
        # Listened for from the start: a chat stopped while it registers ends as one
        # stopped later (it was killed, 143 or 129: found by review).
        await nursery.start(cancel_on_signal, nursery.cancel_scope)
        await _chat(args, env, held)
        nursery.cancel_scope.cancel()
    dropped = held[0].events_dropped if held else 0
    if dropped:
        raise MessagesNotShown(
            f"{dropped} events received (messages, joins, leaves) were not shown: the output "
            "was read too slowly"
        )
    return ExitStatus.OK


async def _chat(args: argparse.Namespace, env: Environment, held: list[Participant]) -> None:
    """Register, talk, leave; then show what is left to show."""
    as_json = args.json or not env.stdin_isatty
    async with trio.open_nursery() as shown, _open(args) as participant:
        held.append(participant)
        _announce(participant, env)
        shown.start_soon(print_events, participant.events, partial(_render, as_json=as_json), env)
        await send_lines(participant.send, env, MAX_MESSAGE_BYTES)
        if args.stay:
            await trio.sleep_forever()


def _stdin_messages(env: Environment, max_bytes: int) -> list[bytes]:
    """Every line of stdin as the bytes it came as (``send -`` checks every message before
    any goes), each at most ``max_bytes``; MAX_SEND_LINES and MAX_SEND_BYTES at most: all
    of stdin was held, gigabytes of /dev/zero or of ``yes``, and then each line as text
    and again as bytes, a byte that is not UTF-8 as a surrogate of 4: 10,000 lines of
    64 KiB of 0xff took 1.9 GiB (found by review)."""
    stdin = env.stdin_bytes()
    messages: list[bytes] = []
    total = 0
    while line := _line_of_a_message(stdin, max_bytes):
        if len(messages) == MAX_SEND_LINES:
            raise UsageError(
                f"more than {MAX_SEND_LINES} lines on stdin: send takes every message "
                "before any goes; nothing was sent (for a stream of lines, use chat)"
            )
        message = line.rstrip(b"\r\n")
        total += len(message)
        if total > MAX_SEND_BYTES:
            raise UsageError(
                f"more than {MAX_SEND_BYTES} bytes of messages on stdin: send takes every "
                "message before any goes; nothing was sent (for a stream of lines, use chat)"
            )
        messages.append(message)
    return messages


def _line_of_a_message(stdin: BinaryIO, max_bytes: int) -> bytes:
    try:
        return read_bytes_line(stdin, max_bytes)
    except LongLine:
        raise UsageError(f"a line of stdin over {max_bytes} bytes; nothing was sent") from None


def _argument_messages(texts: list[str]) -> list[bytes]:
    try:
        return [message_bytes(text) for text in texts]
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def run_send(args: argparse.Namespace, env: Environment) -> ExitStatus:
    """Ends on SIGTERM or a hangup as on Ctrl-C: its goodbye said, with 128 + the signal.
    (SIGTERM killed it without one, and the others saw it time out 30 s later: found
    by review.)"""
    _check_profile(args)
    stopped = Stopped()
    done: list[ExitStatus] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(cancel_on_signal, nursery.cancel_scope, stopped)
        done.append(await _send(args, env))
        nursery.cancel_scope.cancel()
    if done:
        return done[0]
    assert stopped.received is not None, "only a signal cancels it"
    return ExitStatus(128 + stopped.received)


async def _send(args: argparse.Namespace, env: Environment) -> ExitStatus:
    longest = MAX_CHAT_BYTES if args.secure else MAX_MESSAGE_BYTES
    if args.text == ["-"]:
        messages = await trio.to_thread.run_sync(
            _stdin_messages, env, longest, abandon_on_cancel=True
        )
    else:
        messages = _argument_messages(args.text)
    for data in messages:
        if len(data) > longest:
            raise UsageError(f"a message of {len(data)} bytes; at most {longest}")
    if args.secure:
        return await run_secure_send(args, env, messages)
    for data in messages:
        if data in (CONNECT_WORD, DISCONNECT_WORD):
            raise UsageError(
                f"{data.decode()!r} alone is a control word in this protocol, not a message"
            )
    async with _open(args) as participant:
        assert participant.relay_key is not None  # registered
        largest = max_message_bytes(participant.relay_key)
        # Every message checked before the first goes: a later one too long for a
        # larger relay key ended the command after the first were sent, and a script
        # sending them again sent those twice (found by review).
        for data in messages:
            if len(data) > largest:
                raise UsageError(
                    f"nothing sent: a message of {len(data)} bytes; at most {largest} with "
                    f"the relay's {participant.relay_key.key_size}-bit key"
                )
        if not args.quiet:
            _announce(participant, env)
        for data in messages:
            await participant.send(data)
    return ExitStatus.OK
