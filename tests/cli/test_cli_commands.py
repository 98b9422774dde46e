"""The ``mcrelay`` commands run in-process against a relay on loopback."""

import errno
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.cli.chat import _render
from mcrelay.cli.environment import Environment
from mcrelay.cli.main import main, run_command
from mcrelay.cli.status import ExitStatus
from mcrelay.client import MessageReceived, ParticipantEvent, PeerPresent, participant
from mcrelay.client import secure as secure_client
from mcrelay.daemon import workers as workers_module
from mcrelay.daemon.banfile import bans_file
from mcrelay.protocol.addresses import RELAY_ITSELF, Address, format_address
from mcrelay.protocol.legacy import MAX_MESSAGE_BYTES
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from mcrelay.protocol.secure.keys import KeyPair, encode_key
from mcrelay.sockets import open_client_socket
from support import (
    LOOPBACK,
    WAIT_S,
    Console,
    assert_one_error_line,
    events_until,
    join,
    legacy_of,
    next_event,
    relay_config,
    running_relay,
    wait_until,
)

Keys = list[rsa.RSAPrivateKey]


def client_flags(port: int) -> list[str]:
    return ["--interface", LOOPBACK, "--port", str(port)]


def json_lines(console: Console) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for line in console.out_lines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        records.append(record)
    return records


@asynccontextmanager
async def unused_port() -> AsyncIterator[int]:
    """A loopback UDP port held by a socket that never answers (and is in no group)."""
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


def is_left(event: ParticipantEvent) -> bool:
    return isinstance(event, PeerLeft)


# --- send ---------------------------------------------------------------------------------


async def test_send_delivers_arguments_in_order(relay_key_file: Path, keys: Keys) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console()
            status = await console.run("send", *client_flags(relay.address[1]), "first", "second")
            assert status == ExitStatus.OK
            joined = await next_event(a)
            assert isinstance(joined, PeerJoined)
            sender = joined.peer
            assert sender[0] == LOOPBACK
            assert await events_until(a, is_left) == [
                MessageReceived(sender, b"first"),
                MessageReceived(sender, b"second"),
                PeerLeft(sender),
            ]
            err = console.stderr.getvalue()
            assert legacy_of(relay).fingerprint in err
            assert f"registered as {format_address(sender)}" in err
            assert console.stdout.getvalue() == ""


async def test_send_sends_nothing_when_one_message_is_too_long_for_the_relays_key(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 3072- or 4096-bit relay key the largest message is shorter (22,040 or
    16,530 bytes): a later message over it ended the command after the first had gone,
    and a script sending them again sent those twice (found by review). Here the bound
    is made small rather than the key large (a 4096-bit key takes seconds to make)."""
    monkeypatch.setattr("mcrelay.cli.chat.max_message_bytes", lambda _key: 10)
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console()
            flags = client_flags(relay.address[1])
            status = await console.run("send", *flags, "first", "over ten bytes")
            assert status == ExitStatus.USAGE
            assert "nothing sent: a message of 14 bytes; at most 10" in console.stderr.getvalue()
            events = [await next_event(a), await next_event(a)]
            assert [type(e) for e in events] == [PeerJoined, PeerLeft]


async def test_send_quiet_prints_nothing(relay_key_file: Path, keys: Keys) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console()
            assert await console.run("send", "-q", *client_flags(relay.address[1]), "x") == 0
            assert (console.stdout.getvalue(), console.stderr.getvalue()) == ("", "")
            joined = await next_event(a)
            assert isinstance(joined, PeerJoined)
            assert await next_event(a) == MessageReceived(joined.peer, b"x")


async def test_send_dash_reads_one_message_per_line(relay_key_file: Path, keys: Keys) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console("one\nsecond line\r\nthird: ünïcödé ✓\n")
            status = await console.run("send", *client_flags(relay.address[1]), "-")
            assert status == ExitStatus.OK
            joined = await next_event(a)
            assert isinstance(joined, PeerJoined)
            sender = joined.peer
            assert await events_until(a, is_left) == [
                MessageReceived(sender, b"one"),
                MessageReceived(sender, b"second line"),
                MessageReceived(sender, "third: ünïcödé ✓".encode()),
                PeerLeft(sender),
            ]


async def test_send_reads_stdin_only_for_a_lone_dash(relay_key_file: Path, keys: Keys) -> None:
    """As its help says (test_cli_help.py): a '-' among other messages is one."""
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console("from stdin\n")
            assert await console.run("send", *client_flags(relay.address[1]), "a", "-", "b") == 0
            received = [e for e in await events_until(a, is_left) if isinstance(e, MessageReceived)]
            assert [e.data for e in received] == [b"a", b"-", b"b"]


async def test_send_with_the_right_pinned_fingerprint(relay_key_file: Path, keys: Keys) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console()
            flags = [
                *client_flags(relay.address[1]),
                "--relay-fingerprint",
                legacy_of(relay).fingerprint,
            ]
            assert await console.run("send", *flags, "pinned") == ExitStatus.OK
            joined = await next_event(a)
            assert isinstance(joined, PeerJoined)
            assert await next_event(a) == MessageReceived(joined.peer, b"pinned")


async def test_send_unicast_empty_and_largest_messages(relay_key_file: Path, keys: Keys) -> None:
    largest = "z" * MAX_MESSAGE_BYTES
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console()
            flags = [*client_flags(relay.address[1]), "--relay", LOOPBACK]
            assert await console.run("send", *flags, "", largest) == ExitStatus.OK
            joined = await next_event(a)
            assert isinstance(joined, PeerJoined)
            assert await events_until(a, is_left) == [
                MessageReceived(joined.peer, b""),
                MessageReceived(joined.peer, largest.encode()),
                PeerLeft(joined.peer),
            ]
            assert f"with relay {LOOPBACK}:{relay.address[1]}" in console.stderr.getvalue()


# Python gives bytes of argv and stdin that are not UTF-8 as lone surrogates (surrogateescape).
LATIN_1 = "caf\udce9"
"""'café' typed in a Latin-1 terminal: the byte 0xE9 as Python hands it over."""


async def test_send_passes_bytes_that_are_not_utf8_as_they_came(
    relay_key_file: Path, keys: Keys
) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            flags = client_flags(relay.address[1])
            assert await Console().run("send", *flags, "\udcff", LATIN_1) == ExitStatus.OK
            assert await Console(f"ok\n{LATIN_1}\nlast\n").run("send", *flags, "-") == 0
            received = [e for e in await events_until(a, is_left) if isinstance(e, MessageReceived)]
            received += [
                e for e in await events_until(a, is_left) if isinstance(e, MessageReceived)
            ]
            assert [e.data for e in received] == [b"\xff", b"caf\xe9", b"ok", b"caf\xe9", b"last"]


async def test_send_refuses_text_that_came_from_no_bytes() -> None:
    async with unused_port() as port:
        console = Console()
        assert await console.run("send", *client_flags(port), "ok", "\ud800") == ExitStatus.USAGE
    assert_one_error_line(console, "not text")


# --- chat ---------------------------------------------------------------------------------


async def test_chat_sends_a_latin1_line_as_its_bytes(relay_key_file: Path, keys: Keys) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console(f"{LATIN_1}\n\ud800\nafter\n")
            assert await console.run("chat", *client_flags(relay.address[1])) == ExitStatus.OK
            received = [e for e in await events_until(a, is_left) if isinstance(e, MessageReceived)]
            assert [e.data for e in received] == [b"caf\xe9", b"after"]
            assert [line for line in console.err_lines() if "not sent" in line] == [
                "mcrelay: not sent: character '\\ud800' at 0 is not text; nothing sent"
            ]


class HungUpTerminal(io.RawIOBase):
    """A terminal that has hung up: reading it fails with EIO."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any, /) -> int:
        raise OSError(errno.EIO, "Input/output error")


async def test_a_chat_whose_terminal_hangs_up_says_goodbye_and_ends(
    relay_key_file: Path, keys: Keys
) -> None:
    """It ended with exit 1 and no goodbye (found by review)."""
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console()
            console.env.stdin = io.TextIOWrapper(io.BufferedReader(HungUpTerminal()))
            assert await console.run("chat", *client_flags(relay.address[1])) == ExitStatus.OK
            joined = await next_event(a)
            assert isinstance(joined, PeerJoined)
            await events_until(a, lambda event: event == PeerLeft(joined.peer))


async def test_chat_json_sends_lines_and_prints_events(relay_key_file: Path, keys: Keys) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console("hello\n")
            statuses: list[ExitStatus] = []

            async def chat() -> None:
                argv = ["chat", "--json", "--stay", *client_flags(relay.address[1])]
                statuses.append(await run_command(argv, console.env))

            expected = {"event": "message", "from": format_address(a.address), "text": "reply"}
            with trio.fail_after(WAIT_S):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(chat)
                    joined = await next_event(a)
                    assert isinstance(joined, PeerJoined)
                    chatter = joined.peer
                    assert await next_event(a) == MessageReceived(chatter, b"hello")
                    await a.send("reply")
                    await wait_until(lambda: expected in json_lines(console))
                    async with join(relay, keys[2]) as b:
                        later = {"event": "joined", "peer": format_address(b.address)}
                        await wait_until(lambda: later in json_lines(console))
                    nursery.cancel_scope.cancel()

            assert statuses == []  # cancelled while staying, never returned
            records = json_lines(console)  # every line is JSON
            # a was there before the chat registered; b came after.
            present = {"event": "present", "peer": format_address(a.address)}
            assert records[:3] == [present, expected, later]
            assert legacy_of(relay).fingerprint in console.stderr.getvalue()
            # The chat said goodbye on its way out.
            await events_until(a, lambda event: event == PeerLeft(chatter))


async def test_chat_without_stay_ends_with_its_input(relay_key_file: Path, keys: Keys) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            console = Console("bye now\n")
            status = await console.run("chat", *client_flags(relay.address[1]))
            assert status == ExitStatus.OK
            joined = await next_event(a)
            assert isinstance(joined, PeerJoined)
            assert await events_until(a, is_left) == [
                MessageReceived(joined.peer, b"bye now"),
                PeerLeft(joined.peer),
            ]
            json_lines(console)  # stdin is not a terminal: whatever was printed is JSON


PEER: Address = ("127.0.0.1", 5000)


@pytest.mark.parametrize(
    ("event", "human", "as_json"),
    [
        (
            MessageReceived(PEER, b"hi there"),
            "[127.0.0.1:5000] hi there",
            {"event": "message", "from": "127.0.0.1:5000", "text": "hi there"},
        ),
        (
            MessageReceived(RELAY_ITSELF, b"maintenance at noon"),
            "[relay] maintenance at noon",
            {"event": "message", "from": "0.0.0.0:0", "text": "maintenance at noon"},
        ),
        (
            MessageReceived(PEER, "grüß ✓".encode()),
            "[127.0.0.1:5000] grüß ✓",
            {"event": "message", "from": "127.0.0.1:5000", "text": "grüß ✓"},
        ),
        (
            PeerJoined(PEER),
            "* 127.0.0.1:5000 joined",
            {"event": "joined", "peer": "127.0.0.1:5000"},
        ),
        (
            PeerPresent(PEER),
            "* 127.0.0.1:5000 present",
            {"event": "present", "peer": "127.0.0.1:5000"},
        ),
        (PeerLeft(PEER), "* 127.0.0.1:5000 left", {"event": "left", "peer": "127.0.0.1:5000"}),
        (
            PeerJoined(("::1", 7)),
            "* [::1]:7 joined",
            {"event": "joined", "peer": "[::1]:7"},
        ),
    ],
)
def test_render(event: ParticipantEvent, human: str, as_json: dict[str, str]) -> None:
    assert _render(event, as_json=False) == human
    rendered = _render(event, as_json=True)
    assert "\n" not in rendered
    assert json.loads(rendered) == as_json


def test_render_json_keeps_text_unescaped_on_one_line() -> None:
    rendered = _render(MessageReceived(PEER, "é\nsecond".encode()), as_json=True)
    assert "\n" not in rendered
    assert "é" in rendered
    assert json.loads(rendered)["text"] == "é\nsecond"


@pytest.mark.parametrize("secure", [False, True])
async def test_the_multicast_ttl_is_a_client_flag(
    monkeypatch: pytest.MonkeyPatch, secure: bool
) -> None:
    """The page: IP_MULTICAST_TTL 1 (configurable). It was not (found by review)."""
    asked: list[int] = []

    async def recording(*, interface: str, ttl: int) -> Any:
        asked.append(ttl)
        return await open_client_socket(interface=interface, ttl=ttl)

    monkeypatch.setattr(secure_client if secure else participant, "open_client_socket", recording)
    relay_key = encode_key(KeyPair.generate().public)
    profile = ["--secure", "--relay-key", relay_key] if secure else []
    async with unused_port() as port:
        console = Console()
        argv = [*client_flags(port), *profile, "--register-timeout", "0.3", "--ttl", "4", "x"]
        assert await console.run("send", *argv) == ExitStatus.UNREACHABLE
    assert asked == [4]


# --- exit codes ---------------------------------------------------------------------------


async def test_no_relay_is_unreachable() -> None:
    async with unused_port() as port:
        console = Console()
        status = await console.run("send", *client_flags(port), "--register-timeout", "0.3", "x")
    assert status == ExitStatus.UNREACHABLE
    assert int(status) == 3
    assert_one_error_line(console, "no relay answered")


async def test_wrong_pinned_fingerprint_is_a_key_mismatch(relay_key_file: Path) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        console = Console()
        status = await console.run(
            "send",
            *client_flags(relay.address[1]),
            "--relay-fingerprint",
            "SHA256:" + "A" * 43,
            "--register-timeout",
            "0.5",
            "x",
        )
        assert status == ExitStatus.KEY_MISMATCH
        assert int(status) == 5
        assert_one_error_line(console, legacy_of(relay).fingerprint)
        assert len(relay.roster) == 0


async def test_a_mismatch_is_reported_once_the_relays_answered(relay_key_file: Path) -> None:
    # The answers to the first request settle it: the minute-long timeout is not waited out
    # (Console.run fails after WAIT_S).
    async with running_relay(relay_config(relay_key_file)) as relay:
        console = Console()
        flags = [*client_flags(relay.address[1]), "--register-timeout", "60"]
        status = await console.run("send", *flags, "--relay-fingerprint", "SHA256:" + "A" * 43, "x")
        assert status == ExitStatus.KEY_MISMATCH
        assert_one_error_line(console, legacy_of(relay).fingerprint)


@pytest.mark.parametrize(
    ("argv", "environ", "fragment"),
    [
        (["daemon", "--port", "70000"], {}, "--port"),
        (["send", "--group", "10.0.0.1", "x"], {}, "multicast"),
        (["send", "x"], {"MCRELAY_PORT": "abc"}, "MCRELAY_PORT"),
        (["daemon"], {"MCRELAY_PORT": "abc"}, "MCRELAY_PORT"),
        ([], {}, "required"),
        (["frobnicate"], {}, "frobnicate"),
        (["send"], {}, "text"),
        (["send", "--relay-fingerprint", "SHA256:short", "x"], {}, "fingerprint"),
        (["send", "--register-timeout", "0", "x"], {}, "positive"),
        (["send", "--interface", "localhost", "x"], {}, "IPv4"),
        (["daemon", "--log-level", "loud"], {}, "loud"),
    ],
)
async def test_usage_errors(argv: list[str], environ: dict[str, str], fragment: str) -> None:
    console = Console(environ=environ)
    status = await console.run(*argv)
    assert status == ExitStatus.USAGE
    assert int(status) == 2
    assert_one_error_line(console, fragment)


async def test_daemon_refuses_a_bad_setting(tmp_path: Path) -> None:
    console = Console()
    flags = ["--interface", LOOPBACK, "--port", "0", "--key-file", str(tmp_path / "k.pem")]
    status = await console.run("daemon", *flags, "--max-message-bytes", "40000")
    assert status == ExitStatus.USAGE
    assert_one_error_line(console, "max message bytes")
    assert not (tmp_path / "k.pem").exists()


async def test_the_daemon_names_its_settings_file_at_start(tmp_path: Path) -> None:
    """Which file a reload reads again (the start's lines did not say: found by review)."""
    settings = tmp_path / "mcrelay.toml"
    settings.write_text(f"interface = '{LOOPBACK}'\nport = 0\napi = 'off'\nkey_file = 'k.pem'\n")
    console = Console()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(console.run, "daemon", "--config", str(settings))
        await wait_until(lambda: "settings file" in console.stderr.getvalue())
        nursery.cancel_scope.cancel()
    assert f"settings file {settings}" in console.stderr.getvalue()
    assert "relay listening" in console.stderr.getvalue()


async def test_daemon_stops_with_one_line_when_its_crypto_workers_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> list[str]:
        return [sys.executable, "-c", "raise SystemExit(3)"]

    monkeypatch.setattr(workers_module, "_command", broken)
    console = Console()
    flags = ["--interface", LOOPBACK, "--port", "0", "--key-file", str(tmp_path / "k.pem")]
    status = await console.run("daemon", *flags, "--api", "off")
    assert status == ExitStatus.ERROR
    assert console.err_lines()[-1] == (
        "mcrelay: error: a crypto worker could not start (exit status 3)"
    )
    assert "Traceback" not in console.stderr.getvalue()


async def test_the_error_line_has_priority_err_when_stderr_is_the_journal(tmp_path: Path) -> None:
    """Under systemd the line saying why the daemon could not start is filed at priority
    err (3), so ``journalctl -p err`` shows it. (A buffer has no descriptor to compare with
    JOURNAL_STREAM, so the variable is taken at its word: see is_journal_stream.)"""
    console = Console(environ={"JOURNAL_STREAM": "8:1234"})
    status = await console.run("daemon", "--key-file", str(tmp_path / "k.pem"), "--port", "x")
    assert status == ExitStatus.USAGE
    [line] = console.err_lines()
    assert line.startswith("<3>mcrelay: error: "), line
    assert "--port" in line


@pytest.mark.parametrize(
    "text", ["x" * (MAX_MESSAGE_BYTES + 1), "é" * (MAX_MESSAGE_BYTES // 2 + 1)]
)
async def test_send_refuses_a_message_too_long(text: str) -> None:
    async with unused_port() as port:
        console = Console()
        status = await console.run("send", *client_flags(port), "short", text)
    assert status == ExitStatus.USAGE
    assert_one_error_line(console, str(MAX_MESSAGE_BYTES))


async def test_send_dash_refuses_a_line_too_long() -> None:
    async with unused_port() as port:
        console = Console("fine\n" + "y" * (MAX_MESSAGE_BYTES + 1) + "\n")
        status = await console.run("send", *client_flags(port), "-")
    assert status == ExitStatus.USAGE
    assert_one_error_line(console, str(MAX_MESSAGE_BYTES))


async def test_environment_supplies_defaults(relay_key_file: Path, keys: Keys) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            environ = {"MCRELAY_INTERFACE": LOOPBACK, "MCRELAY_PORT": str(relay.address[1])}
            console = Console(environ=environ)
            assert await console.run("send", "from the environment") == ExitStatus.OK
            joined = await next_event(a)
            assert isinstance(joined, PeerJoined)
            assert await next_event(a) == MessageReceived(joined.peer, b"from the environment")


def test_main_returns_the_exit_status() -> None:
    console = Console()
    assert main(["daemon", "--port", "70000"], console.env) == 2
    assert_one_error_line(console, "--port")


def test_ctrl_c_again_while_the_last_flush_waits_leaves_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stdout nobody reads held the final flush; a second Ctrl-C there was a traceback
    (found by review). It leaves at once with the command's status."""

    class Stuck(io.StringIO):
        def flush(self) -> None:
            raise KeyboardInterrupt

    exits: list[int] = []

    def leave(status: int) -> None:
        exits.append(status)

    monkeypatch.setattr(os, "_exit", leave)
    console = Console()
    env = Environment(stdout=Stuck(), stderr=console.stderr, environ={})
    main(["daemon", "--port", "70000"], env)
    assert exits == [2]


def test_human_chat_output_cannot_fake_lines_or_send_escapes() -> None:
    forged = MessageReceived(("127.0.0.1", 4000), b"hi\n[relay] send me your password\x1b[2J")
    line = _render(forged, as_json=False)
    assert "\n" not in line
    assert "\x1b" not in line
    assert line == "[127.0.0.1:4000] hi\\n[relay] send me your password\\x1b[2J"


async def test_bad_admin_api_address_and_huge_buffer_are_usage_errors() -> None:
    for argv in (
        ["clients", "--api", "foo"],
        ["daemon", "--receive-buffer-bytes", "99999999999", "--api", "off"],
        ["send", "--interface", "127.0.0.1", "DISCONNECT"],
    ):
        console = Console()
        assert await console.run(*argv) == ExitStatus.USAGE
        assert console.stderr.getvalue().count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (
            ["send", "--interface", "127.0.0.1", "x", "--bogus"],
            "send: unrecognized arguments: --bogus",
        ),
        (["config", "check", "extra"], "config check: unrecognized arguments: extra"),
        (["clients", "--bogus"], "clients: unrecognized arguments: --bogus"),
        (["--bogus", "clients"], "unrecognized arguments: --bogus"),
        (["send"], "send: the following arguments are required: text"),
        # Once taken for --api-token-file (a prefix), the error quoting the secret.
        (
            ["config", "check", "--api-token", "s3cr3t"],
            "config check: unrecognized arguments: --api-token (",
        ),
        (
            ["config", "check", "--api-token=s3cr3t"],
            "config check: unrecognized arguments: --api-token (",
        ),
    ],
)
async def test_a_usage_error_names_the_command(argv: list[str], start: str) -> None:
    console = Console()
    assert await console.run(*argv) == ExitStatus.USAGE
    assert_one_error_line(console)
    assert console.err_lines()[0].startswith(f"mcrelay: error: {start}"), console.err_lines()


async def test_a_bad_variable_is_said_by_the_command_that_uses_it_and_a_flag_beats_it(
    tmp_path: Path,
) -> None:
    """Every command's parser is built at once: MCRELAY_TTL=abc stopped the daemon and
    config check too, and a flag given did not beat a bad variable (found by a review of
    the docs)."""
    bad_ttl = {"MCRELAY_TTL": "abc"}
    check = Console(environ=bad_ttl)
    assert await check.run("config", "check", "--key-file", str(tmp_path / "k.pem")) == 0
    send = Console(environ=bad_ttl)
    assert await send.run("send", "x") == ExitStatus.USAGE
    assert_one_error_line(send, "MCRELAY_TTL: 'abc'")
    status = Console(environ={"MCRELAY_API": "/nonsense"})
    assert await status.run("status", "--api", "off") == ExitStatus.UNREACHABLE
    assert_one_error_line(status, "'off'")


@pytest.mark.parametrize(
    ("stdin", "profile", "fragment"),
    [
        ("y\n" * 10_001, [], "more than 10000 lines on stdin"),
        ("x" * 40_000, [], "a line of stdin over 32768 bytes; nothing was sent"),
        (
            "x" * 70_000,
            ["--secure", "--relay-key", "ejlAPztvZPMh8B9f+n9QCsMUuLainKb5giVsZHUul2U="],
            "a line of stdin over 65536",
        ),
    ],
)
async def test_send_reads_stdin_within_bounds_before_any_goes(
    stdin: str, profile: list[str], fragment: str
) -> None:
    """All of stdin was held before the first message went (gigabytes of /dev/zero or
    of 'yes': found by review); refused before any datagram."""
    console = Console(stdin_text=stdin)
    flags = ["--relay", "127.0.0.1", "--port", "9", "--interface", "127.0.0.1", *profile]
    assert await console.run("send", *flags, "-") == ExitStatus.USAGE
    assert_one_error_line(console, fragment)


async def check_beside_bans_file(tmp_path: Path, mode: int, port: int) -> Console:
    """``config check`` for ``port`` with a bans file of port 5007 of ``mode`` beside."""
    bans = bans_file(tmp_path, 5007)
    bans.write_text("mcrelay-bans 1\n10.0.0.7 1795012345.125 600\n")
    bans.chmod(mode)
    check = Console()
    argv = ["config", "check", "--key-file", str(tmp_path / "k.pem"), "--port", str(port)]
    await check.run(*argv)
    return check


async def test_config_check_says_a_bans_file_of_another_port(tmp_path: Path) -> None:
    check = await check_beside_bans_file(tmp_path, 0o600, 5008)
    assert check.out_lines()[0].endswith("all settings valid")
    assert check.err_lines() == [
        "mcrelay: warning: no bans file bans-5008 for this port, but bans-5007 beside it: if "
        "this relay took the place of that port's, stop it and rename the file to bans-5008"
    ]


async def test_config_check_says_a_setting_of_the_file_a_flag_or_variable_hides(
    tmp_path: Path,
) -> None:
    """The unit's ``--api`` flag hid a file's ``api`` without a word (found by review)."""
    settings = tmp_path / "mcrelay.toml"
    settings.write_text("port = 6001\napi = 'off'\nclient_timeout = 9\n")
    check = Console(environ={"MCRELAY_CLIENT_TIMEOUT": "12"})
    key = str(tmp_path / "k.pem")
    await check.run("config", "check", "--config", str(settings), "--key-file", key, "--api", "off")
    assert check.err_lines() == [
        f"mcrelay: warning: 'api' in {settings} is not used: --api gives it",
        f"mcrelay: warning: 'client_timeout' in {settings} is not used: "
        "MCRELAY_CLIENT_TIMEOUT gives it",
    ]


async def test_config_check_reads_the_bans_file_as_the_daemon_would(tmp_path: Path) -> None:
    check = await check_beside_bans_file(tmp_path, 0o644, 5007)
    assert_one_error_line(check, f"bans file {bans_file(tmp_path, 5007)} has mode 0644")


@pytest.mark.parametrize(
    ("variable", "value", "other", "profile"),
    [
        (
            "MCRELAY_RELAY_KEY",
            "ejlAPztvZPMh8B9f+n9QCsMUuLainKb5giVsZHUul2U=",
            "AXQK9dm6xvZ7rOAaFe7PGW8CkxbY1bTyHkZ8yXid9hY=",
            [],
        ),
        ("MCRELAY_RELAY_FINGERPRINT", "SHA256:" + "A" * 43, "SHA256:" + "B" * 43, ["--secure"]),
    ],
)
async def test_one_profiles_variable_stops_no_command_of_the_other(
    variable: str, value: str, other: str, profile: list[str], tmp_path: Path
) -> None:
    """Exported for one profile, it refused every command of the other as if its flag
    were given, naming a flag nobody typed (found by review): the command goes on, here
    to find no relay."""
    console = Console(environ={variable: value})
    flags = ["--relay", "127.0.0.1", "--port", "9", "--interface", "127.0.0.1"]
    flags += ["--register-timeout", "0.2", *profile]
    if profile:  # its own files, not the user's (two at once: the identity is in use)
        flags += ["--identity-file", str(tmp_path / "id"), "--known-relays", str(tmp_path / "k")]
    assert await console.run("send", *flags, "x") == ExitStatus.UNREACHABLE
    flag = "--" + variable.removeprefix("MCRELAY_").lower().replace("_", "-")
    assert await console.run("send", *flags, flag, other, "x") == ExitStatus.USAGE  # typed


@pytest.mark.parametrize(
    ("argv", "environ", "fragment"),
    [
        (["send", "--relay", "255.255.255.255", "x"], {}, "'255.255.255.255' is no one host's"),
        (["send", "--relay", "0.0.0.0", "x"], {}, "'0.0.0.0' is no one host's address"),
        (["chat", "--relay", "239.1.1.1"], {}, "'239.1.1.1' is a multicast group, not a host"),
        (["config", "check", "--config", ""], {}, "an empty path names no settings file"),
        (["config", "check"], {"MCRELAY_CONFIG": ""}, "MCRELAY_CONFIG is empty"),
    ],
)
async def test_addresses_and_paths_that_name_nothing_are_usage_errors(
    argv: list[str], environ: dict[str, str], fragment: str
) -> None:
    """A broadcast relay failed later with a bare 'Permission denied'; an empty settings
    path was read as the current directory, or (the variable) as none (found by review)."""
    console = Console(environ=environ)
    assert await console.run(*argv) == ExitStatus.USAGE
    assert_one_error_line(console, fragment)
