"""``mcrelay chat --secure`` and ``mcrelay send --secure``: the secure profile's client.

The same shape and output as the legacy commands (a sender is its ``ip:port``, the
relay's own messages ``relay``; joins and leaves are ``* ip:port joined``), and in
JSON the same events plus the origin's ``profile`` and ``key`` (the client id
``k:...`` of a secure member, the fingerprint ``SHA256:...`` of a legacy one). A secure
member that moved is ``* old moved to new`` (legacy chats show it as a leave and a join;
the relay announces no move to secure members: it shows at its first message from there).

The relay key: ``--relay-key`` pins it; else the known-relays file's entry for the
relay's ``host:port``; else the first answer to KEY_QUERY is trusted and, once the
handshake proves the relay holds that key, written to the known-relays file.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from mcrelay.cli.console import print_events, send_lines
from mcrelay.cli.environment import Environment
from mcrelay.cli.options import UsageError, add_flag, argument_type
from mcrelay.cli.signals import cancel_on_signal
from mcrelay.cli.status import ExitStatus
from mcrelay.cli.text import json_text, printable
from mcrelay.client.participant import REGISTER_TIMEOUT_S, RelayUnreachable
from mcrelay.client.secure import (
    RelayKeyChanged,
    SecureParticipant,
    ended_error,
    open_secure_participant,
)
from mcrelay.client.secure_events import ChatGivenUp, SecureEvent
from mcrelay.client.secure_files import (
    IDENTITY_FILE_NAME,
    KNOWN_RELAYS_FILE_NAME,
    hold_identity,
    load_known_relays,
    load_or_create_identity,
    remember_relay,
)
from mcrelay.files import FileError
from mcrelay.protocol.addresses import RELAY_ITSELF, Address, format_address
from mcrelay.protocol.secure.client_events import (
    ChatReceived,
    CloseReason,
    MemberMoved,
    NoticeReceived,
    PresenceChanged,
)
from mcrelay.protocol.secure.client_handshake import low_order
from mcrelay.protocol.secure.keys import KeyPair, client_id, decode_key, encode_key
from mcrelay.protocol.secure.messages import MAX_CHAT_BYTES, PresenceEvent
from mcrelay.protocol.secure.origins import Origin, OriginKind
from mcrelay.protocol.secure.retries import GIVE_UP_AFTER_S
from mcrelay.protocol.secure.sending import MESSAGE_DEADLINE_S
from mcrelay.settings.config import state_directory

END_WAIT_S = MESSAGE_DEADLINE_S + 1.0
"""At the end of its input, how long chat waits for its lines to be acknowledged (or
given up: 10 s after each was first sent) before it leaves."""


def _relay_public_key(text: str) -> bytes:
    key = decode_key(text)
    if low_order(key):
        raise ValueError(f"{text.strip()!r} is a Curve25519 key of low order: no relay holds it")
    return key


relay_key = argument_type(_relay_public_key)
PRESENCE_WORDS = {
    PresenceEvent.JOINED: "joined",
    PresenceEvent.LEFT: "left",
    PresenceEvent.ALREADY_PRESENT: "present",
}
STATE_TEXT = "$XDG_STATE_HOME/mcrelay/ (~/.local/state/mcrelay/ when unset)"


def add_secure_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    parser.add_argument(
        "--secure",
        action="store_true",
        help="use the secure profile (Noise sessions, unicast to the relay) instead of the "
        "legacy one",
    )
    add_flag(
        parser,
        environ,
        "--relay-key",
        relay_key,
        None,
        "with --secure: the relay's public key (base64); any other is refused",
    )
    add_flag(
        parser,
        environ,
        "--known-relays",
        Path,
        state_directory(environ) / KNOWN_RELAYS_FILE_NAME,
        "with --secure: relays' keys trusted on first use, one 'HOST:PORT KEY' a line",
        default_text=f"{KNOWN_RELAYS_FILE_NAME} in {STATE_TEXT}",
    )
    add_flag(
        parser,
        environ,
        "--identity-file",
        Path,
        state_directory(environ) / IDENTITY_FILE_NAME,
        "with --secure: this client's private key (base64, mode 0600), made if missing",
        default_text=f"{IDENTITY_FILE_NAME} in {STATE_TEXT}",
    )


def connect_timeout_s(args: argparse.Namespace) -> float:
    """--register-timeout, else the page's 90 s (the legacy profile's 5 s without --secure)."""
    if args.register_timeout is not None:
        timeout: float = args.register_timeout
        return timeout
    return GIVE_UP_AFTER_S if args.secure else REGISTER_TIMEOUT_S


def _destination(args: argparse.Namespace) -> Address:
    return (args.relay or args.group, args.port)


def _load_files(args: argparse.Namespace) -> tuple[KeyPair, bytes | None, bool]:
    """The identity, the key to expect, and whether the identity was just made."""
    try:
        identity, created = load_or_create_identity(args.identity_file)
        expected: bytes | None = args.relay_key
        if expected is None:
            expected = load_known_relays(args.known_relays).get(format_address(_destination(args)))
    except FileError as exc:
        raise UsageError(str(exc)) from None
    return identity, expected, created


@asynccontextmanager
async def _open(
    args: argparse.Namespace, env: Environment, *, announce: bool
) -> AsyncIterator[SecureParticipant]:
    identity, expected, created = await trio.to_thread.run_sync(_load_files, args)
    if created:
        env.say(f"mcrelay: made a new identity key in {args.identity_file}")
    with ExitStack() as held:
        try:
            held.enter_context(hold_identity(args.identity_file))
        except FileError as exc:
            raise UsageError(str(exc)) from None
        async with _participant(args, env, identity, expected, announce=announce) as participant:
            yield participant


@asynccontextmanager
async def _participant(
    args: argparse.Namespace,
    env: Environment,
    identity: KeyPair,
    expected: bytes | None,
    *,
    announce: bool,
) -> AsyncIterator[SecureParticipant]:
    async with open_secure_participant(
        destination=_destination(args),
        interface=args.interface,
        ttl=args.ttl,
        identity=identity,
        relay_key=expected,
        connect_timeout_s=connect_timeout_s(args),
    ) as participant:
        connected = participant.connected
        assert connected is not None
        where = format_address(_destination(args))
        if connected.learned:
            try:
                other = await trio.to_thread.run_sync(  # Ctrl-C need not wait for the lock
                    remember_relay,
                    args.known_relays,
                    where,
                    connected.relay_key,
                    abandon_on_cancel=True,
                )
            except FileError as exc:
                env.say(f"mcrelay: the relay's key is not remembered: {exc}")
            else:
                if other is not None:  # written meanwhile: that key is the one expected
                    raise RelayKeyChanged(where, other, connected.relay_key)
                env.say(
                    f"mcrelay: trusting relay {where} key {encode_key(connected.relay_key)} on "
                    f"first use; remembered in {args.known_relays}"
                )
        if announce:
            env.say(
                f"mcrelay: connected as {client_id(identity.public)} with relay "
                f"{format_address(connected.relay)}, key {encode_key(connected.relay_key)}"
            )
        yield participant


def _origin_fields(origin: Origin) -> dict[str, Any]:
    if origin.kind == OriginKind.RELAY:
        return {}
    if origin.kind == OriginKind.SECURE_CLIENT:
        return {"profile": "secure", "key": client_id(origin.id)}
    digest = base64.b64encode(origin.id).decode("ascii").rstrip("=")
    return {"profile": "legacy", "key": f"SHA256:{digest}"}


def _name(origin: Origin) -> str:
    return format_address(origin.address or RELAY_ITSELF)


def render(event: SecureEvent, as_json: bool) -> str:
    if isinstance(event, ChatReceived):
        text = event.text.decode("utf-8", errors="replace")
        if as_json:
            fields = {"event": "message", "from": _name(event.origin), "text": text}
            return json_text(fields | _origin_fields(event.origin))
        shown = "relay" if event.origin.kind == OriginKind.RELAY else _name(event.origin)
        return f"[{shown}] {printable(text)}"
    if isinstance(event, PresenceChanged):
        kind = PRESENCE_WORDS[event.event]
        reason = event.reason.name.lower() if event.event == PresenceEvent.LEFT else None
        if as_json:
            fields = {"event": kind, "peer": _name(event.origin)} | _origin_fields(event.origin)
            return json.dumps(fields | ({"reason": reason} if reason else {}))
        return f"* {_name(event.origin)} {kind}" + (f" ({reason})" if reason else "")
    if isinstance(event, MemberMoved):
        previous = format_address(event.previous)
        if as_json:
            fields = {"event": "moved", "peer": _name(event.origin), "previous": previous}
            return json.dumps(fields | _origin_fields(event.origin))
        return f"* {previous} moved to {_name(event.origin)}"
    if isinstance(event, ChatGivenUp):
        text = event.text.decode("utf-8", errors="replace")
        if as_json:
            return json_text({"event": "undelivered", "text": text})
        return f"* not delivered (the relay did not acknowledge it): {printable(text)}"
    if as_json:
        notice = event.code.name.lower()
        return json.dumps({"event": "notice", "notice": notice, "text": event.text})
    return f"* relay notice: {_notice_line(event)}"


def _notice_line(event: NoticeReceived) -> str:
    """The notice's name and the relay's text, each once: ``kicked`` when the text says
    no more (the relay's is ``kicked``), the text alone when it names the notice (``the
    relay is shutting down``), else ``kicked: TEXT``. (It read ``kicked: kicked`` and
    ``shutting_down: the relay is shutting down``: found by review.)"""
    name = event.code.name.lower().replace("_", " ")
    text = printable(event.text.strip())
    if text.rstrip(".!").lower() in ("", name):
        return name
    if re.search(rf"\b{name}\b", text, re.IGNORECASE):
        return text
    return f"{name}: {text}"


async def _cancel_when_closed(participant: SecureParticipant, scope: trio.CancelScope) -> None:
    await participant.wait_until(lambda: False)
    scope.cancel()


def _ended(participant: SecureParticipant) -> None:
    """Raise for a session the relay ended (or lost) while the command ran."""
    closed = participant.closed
    if closed is not None and closed.reason is not CloseReason.DISCONNECTED:
        raise ended_error(closed, participant.connection.destination)


@dataclass
class _Chat:
    """What a chat leaves behind for its outcome, however it ended."""

    participant: SecureParticipant | None = None
    waited: bool = False
    """Its end came at the end of its input (not a signal, not the session's end)."""


async def run_secure_chat(args: argparse.Namespace, env: Environment) -> ExitStatus:
    chat = _Chat()
    async with trio.open_nursery() as nursery:
        # Listened for from the start: a chat stopped while it connects (90 s at most)
        # ends as one stopped later (it was killed, 143 or 129: found by review).
        await nursery.start(cancel_on_signal, nursery.cancel_scope)
        await _chat(args, env, chat)
        nursery.cancel_scope.cancel()
    participant = chat.participant
    if participant is None:
        return ExitStatus.OK  # stopped before it was connected
    _ended(participant)
    missing = len(participant.pending) + participant.given_up
    if missing:
        lost = f"the relay did not acknowledge {missing} of {participant.sent} lines"
        if chat.waited:
            raise RelayUnreachable(lost)  # exit 3, as send's
        env.say(f"mcrelay: {lost}")
    return ExitStatus.OK


async def _chat(args: argparse.Namespace, env: Environment, chat: _Chat) -> None:
    """Connect, talk, leave; then show what is left to show: every message received was
    acknowledged (a stdout nobody reads holds the chat here until a signal ends it)."""
    as_json = args.json or not env.stdin_isatty
    async with trio.open_nursery() as shown, _open(args, env, announce=True) as participant:
        chat.participant = participant
        shown.start_soon(print_events, participant.events, partial(render, as_json=as_json), env)
        async with trio.open_nursery() as talking:
            talking.start_soon(_cancel_when_closed, participant, talking.cancel_scope)
            await send_lines(participant.send, env, MAX_CHAT_BYTES)
            if args.stay:
                await participant.wait_until(lambda: False)
            # What was typed goes before the goodbye: a relay holds a DISCONNECT
            # behind a message it misses, or gives that message up.
            with trio.move_on_after(END_WAIT_S):
                await participant.wait_until(lambda: not participant.pending)
            chat.waited = True
            talking.cancel_scope.cancel()


async def run_secure_send(
    args: argparse.Namespace, env: Environment, messages: list[bytes]
) -> ExitStatus:
    """Exits 0 only once the relay acknowledged every message (hop by hop); each of
    ``messages`` is one the secure profile takes (``send`` checked their sizes)."""
    async with _open(args, env, announce=not args.quiet) as participant:
        participant.events.close()  # shows none: never holds the relay's messages back
        for data in messages:
            await participant.send(data)
        await participant.wait_until(lambda: not participant.pending)
        _ended(participant)
        missing = len(participant.pending) + participant.given_up
        if missing:
            raise RelayUnreachable(
                f"the relay did not acknowledge {missing} of {len(messages)} messages"
            )
    return ExitStatus.OK
