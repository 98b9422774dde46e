"""``chat --secure`` and ``send --secure`` against the protocol tests' relay served on
loopback: first use and the known-relays file, a pinned or changed key (exit 5), no
relay (exit 3), acknowledged sends, chat output, and the identity file."""

import dataclasses
import json
import stat
from pathlib import Path

import pytest
import trio
import trio.testing
from stub_secure_relay import LOOPBACK, ServedRelay, served_relay

import mcrelay.cli.secure_chat as secure_chat
from mcrelay.cli.main import run_command
from mcrelay.cli.secure_chat import render
from mcrelay.cli.status import ExitStatus
from mcrelay.client import RelayKeyMismatch
from mcrelay.client.secure import DISCONNECT_LIMIT_S, key_mismatch, open_secure_participant
from mcrelay.client.secure_events import ChatGivenUp
from mcrelay.client.secure_files import load_known_relays, parse_known_relays, remember_relay
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure import sending
from mcrelay.protocol.secure.client import ABANDON_GRACE_S, DISCONNECT_WAIT_S
from mcrelay.protocol.secure.client_events import (
    ChatReceived,
    Closed,
    CloseReason,
    MemberMoved,
    NoticeReceived,
    PresenceChanged,
)
from mcrelay.protocol.secure.header import DatagramType
from mcrelay.protocol.secure.keys import KeyPair, client_id, encode_key, parse_private_key_text
from mcrelay.protocol.secure.messages import LeaveReason, NoticeCode, PresenceEvent
from mcrelay.protocol.secure.origins import RELAY_ORIGIN, Origin, OriginKind
from protocol.secure.client_support import RELAY_KEY
from support import WAIT_S, Console, wait_until

OTHER_KEY = KeyPair.from_private(bytes([9] * 32))


def flags(tmp_path: Path, port: int, *more: str) -> list[str]:
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
        *more,
    ]


def delivered_texts(served: ServedRelay) -> list[bytes]:
    return [body for m in served.relay.members.values() for body in m.delivered]


async def test_first_use_trusts_and_remembers_the_relay_key(tmp_path: Path) -> None:
    async with served_relay() as served:
        console = Console()
        status = await console.run("send", *flags(tmp_path, served.address[1]), "hello")
        assert status == ExitStatus.OK, console.err_lines()
        assert delivered_texts(served) == [b"\x01hello", b"\x04"]
    known = load_known_relays(tmp_path / "known_relays")
    assert known == {f"{LOOPBACK}:{served.address[1]}": RELAY_KEY.public}
    for name in ("known_relays", "identity"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert any("trusting relay" in line for line in console.err_lines())
    assert any("made a new identity key" in line for line in console.err_lines())


async def test_a_changed_relay_key_is_refused_with_both_keys(tmp_path: Path) -> None:
    async with served_relay(OTHER_KEY) as served:
        where = f"{LOOPBACK}:{served.address[1]}"
        (tmp_path / "known_relays").write_text(f"{where} {encode_key(RELAY_KEY.public)}\n")
        (tmp_path / "known_relays").chmod(0o600)
        console = Console()
        status = await console.run("send", *flags(tmp_path, served.address[1]), "hello")
        assert status == ExitStatus.KEY_MISMATCH
        (line,) = console.err_lines()[-1:]
        assert encode_key(RELAY_KEY.public) in line
        assert encode_key(OTHER_KEY.public) in line
        assert line.startswith("mcrelay: error: ")
        assert not served.relay.members
    assert parse_known_relays((tmp_path / "known_relays").read_text()) == {where: RELAY_KEY.public}


def test_two_answers_that_disagree_are_said_so_with_both_keys() -> None:
    """With no key pinned, two KEY_INFO answers to one query said "answered with key X,
    not the expected Y", as if Y had been pinned (found by review)."""
    closed = Closed(CloseReason.KEY_MISMATCH, RELAY_KEY.public, OTHER_KEY.public, True)
    error = key_mismatch("127.0.0.1:5007", closed)
    assert isinstance(error, RelayKeyMismatch)  # exit 5
    assert str(error).startswith(
        f"relay 127.0.0.1:5007 answered one key query with two different keys, "
        f"{encode_key(RELAY_KEY.public)} and {encode_key(OTHER_KEY.public)}: refusing"
    )
    assert "expected" not in str(error)
    pinned = key_mismatch("127.0.0.1:5007", dataclasses.replace(closed, keys_disagreed=False))
    assert "not the expected" in str(pinned)


async def test_a_pinned_key_that_differs_is_refused(tmp_path: Path) -> None:
    async with served_relay() as served:
        pin = ["--relay-key", encode_key(OTHER_KEY.public)]
        console = Console()
        status = await console.run("send", *flags(tmp_path, served.address[1], *pin), "x")
        assert status == ExitStatus.KEY_MISMATCH
        assert not (tmp_path / "known_relays").exists()


async def test_no_relay_exits_3(tmp_path: Path) -> None:
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind((LOOPBACK, 0))
        console = Console()
        more = ["--register-timeout", "0.3"]
        status = await console.run("send", *flags(tmp_path, sock.getsockname()[1], *more), "x")
    assert status == ExitStatus.UNREACHABLE
    assert "no secure relay answered" in console.err_lines()[-1]


async def test_a_relay_that_answers_but_never_takes_the_client_says_so(tmp_path: Path) -> None:
    """A relay limiting joins answered the handshake and dropped the confirming DATA: the
    client said no relay answered (found by review)."""
    async with served_relay() as served:
        served.drop = lambda data: data[1:2] == bytes([DatagramType.DATA])
        console = Console()
        more = ["--register-timeout", "0.5"]
        status = await console.run("send", *flags(tmp_path, served.address[1], *more), "x")
    assert status == ExitStatus.UNREACHABLE
    assert "answered but did not take this client as a member" in console.err_lines()[-1]


async def test_relay_key_without_secure_is_a_usage_error(tmp_path: Path) -> None:
    console = Console()
    argv = ["send", "--relay-key", encode_key(RELAY_KEY.public), "x"]
    assert await console.run(*argv) == ExitStatus.USAGE


async def test_a_bad_known_relays_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "known_relays").write_text("127.0.0.1:5007 not-a-key\n")
    console = Console()
    status = await console.run("send", *flags(tmp_path, 5007), "x")
    assert status == ExitStatus.USAGE
    assert "line 1" in console.err_lines()[-1]


async def chats_seen_by_a_member(
    tmp_path: Path, served: ServedRelay, text: str
) -> list[ChatReceived]:
    """Run ``chat`` with ``text`` on its input while another member listens; the CHATs
    that member got, until it was told the chat left."""
    other = KeyPair.from_private(bytes([5] * 32))
    async with open_secure_participant(
        destination=served.address, interface=LOOPBACK, identity=other, relay_key=RELAY_KEY.public
    ) as peer:
        console = Console(stdin_text=text + "\n")
        status = await console.run("chat", *flags(tmp_path, served.address[1]), "--json")
        assert status == ExitStatus.OK, console.err_lines()
        chats: list[ChatReceived] = []
        with trio.fail_after(WAIT_S):
            async for event in peer.events:
                if isinstance(event, ChatReceived):
                    chats.append(event)
                if isinstance(event, PresenceChanged) and event.event == PresenceEvent.LEFT:
                    return chats
    raise AssertionError("the chat was never seen to leave")


async def test_chat_shows_presence_and_messages_with_their_origin(tmp_path: Path) -> None:
    async with served_relay() as served:
        chats = await chats_seen_by_a_member(tmp_path, served, "hi there")
    me = parse_private_key_text((tmp_path / "identity").read_bytes()).public
    assert [e.text for e in chats] == [b"hi there"]
    assert chats[0].origin.id == me


async def test_chat_at_the_end_of_its_input_leaves_after_its_lines_are_acknowledged(
    tmp_path: Path,
) -> None:
    """It sent DISCONNECT at once: a line whose datagram was lost was given up by the
    relay (or held a page relay's DISCONNECT behind it) and never came (found by review,
    against a page relay)."""
    line = "a line whose first datagram is lost"
    async with served_relay() as served:
        lost = [False]

        def first_line_lost(data: bytes) -> bool:
            is_data = data[1:2] == bytes([DatagramType.DATA])
            if is_data and not lost[0] and len(data) >= 16 + 16 + 3 + 8 + 1 + len(line):
                lost[0] = True
                return True
            return False

        served.drop = first_line_lost
        chats = await chats_seen_by_a_member(tmp_path, served, line)
    assert lost[0]
    assert [e.text for e in chats] == [line.encode()]


async def test_chat_whose_lines_go_unacknowledged_says_so_and_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It waited until every line was given up (10 s a window of 8: 91 s for 72 lines),
    then exited 0 (found by review): it waits END_WAIT_S at most, and a line not
    acknowledged is exit 3, as for send."""
    monkeypatch.setattr(secure_chat, "END_WAIT_S", 0.3)
    async with served_relay() as served:
        served.drop = lambda data: data[1:2] == bytes([DatagramType.DATA]) and len(data) > 60
        console = Console(stdin_text="a line the relay never gets\n")
        with trio.fail_after(WAIT_S):
            status = await console.run("chat", *flags(tmp_path, served.address[1]), "--json")
    assert status == ExitStatus.UNREACHABLE
    assert console.err_lines()[-1] == ("mcrelay: error: the relay did not acknowledge 1 of 1 lines")


async def test_a_line_given_up_mid_session_is_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line the relay never acknowledged was given up in silence while the chat went on
    (found by review): it is shown as not delivered."""
    monkeypatch.setattr(sending, "MESSAGE_DEADLINE_S", 0.3)
    line = "a line the relay never gets"
    async with served_relay() as served:
        # Its DATAs only: the goodbye's, smaller, go through.
        served.drop = lambda data: (
            data[1:2] == bytes([DatagramType.DATA]) and len(data) >= 16 + 16 + 3 + 8 + len(line)
        )
        console = Console(stdin_text=line + "\n")
        async with trio.open_nursery() as nursery:
            argv = ["chat", *flags(tmp_path, served.address[1]), "--json", "--stay"]
            nursery.start_soon(console.run, *argv)
            await wait_until(lambda: any("undelivered" in out for out in console.out_lines()))
            nursery.cancel_scope.cancel()
    shown = [json.loads(out) for out in console.out_lines() if "undelivered" in out]
    assert shown == [{"event": "undelivered", "text": line}]
    given_up = ChatGivenUp(b"a \x1b[2J line")
    assert render(given_up, as_json=False) == (
        "* not delivered (the relay did not acknowledge it): a \\x1b[2J line"
    )


async def test_a_cancellation_from_outside_still_says_goodbye() -> None:
    """The goodbye ran with the socket's task cancelled: it never heard the relay's ACK,
    waited DISCONNECT_LIMIT_S and left the session to time out at the relay (found
    while testing the line given up)."""
    async with served_relay() as served:
        with trio.CancelScope() as scope:
            async with open_secure_participant(
                destination=served.address,
                interface=LOOPBACK,
                identity=KeyPair.generate(),
                relay_key=RELAY_KEY.public,
            ) as participant:
                scope.cancel()
                await trio.sleep_forever()
    assert participant.closed is not None
    assert participant.closed.reason is CloseReason.DISCONNECTED


def test_events_render_as_the_legacy_client_does_plus_the_origin() -> None:
    peer = Origin(OriginKind.SECURE_CLIENT, OTHER_KEY.public, ("127.0.0.1", 40001))
    legacy = Origin(OriginKind.LEGACY_CLIENT, bytes(32), ("127.0.0.1", 40002))
    left = PresenceChanged(PresenceEvent.LEFT, peer, LeaveReason.TIMEOUT)
    assert render(left, as_json=False) == "* 127.0.0.1:40001 left (timeout)"
    assert json.loads(render(left, as_json=True)) == {
        "event": "left",
        "peer": "127.0.0.1:40001",
        "profile": "secure",
        "key": client_id(OTHER_KEY.public),
        "reason": "timeout",
    }
    chat = ChatReceived(legacy, b"hi\x1b[2J")
    assert render(chat, as_json=False) == "[127.0.0.1:40002] hi\\x1b[2J"
    assert json.loads(render(chat, as_json=True))["key"] == "SHA256:" + "A" * 43
    assert render(ChatReceived(RELAY_ORIGIN, b"note"), as_json=False) == "[relay] note"
    notice = NoticeReceived(NoticeCode.KICKED, "bye")
    assert render(notice, as_json=False) == "* relay notice: kicked: bye"


@pytest.mark.parametrize(
    ("code", "text", "line"),
    [
        (NoticeCode.KICKED, "kicked", "* relay notice: kicked"),
        (NoticeCode.BANNED, "", "* relay notice: banned"),
        (NoticeCode.BANNED, "Banned.", "* relay notice: banned"),
        (
            NoticeCode.SHUTTING_DOWN,
            "the relay is shutting down",
            "* relay notice: the relay is shutting down",
        ),
        (
            NoticeCode.REPLACED,
            "replaced by a new session",
            "* relay notice: replaced by a new session",
        ),
        (
            NoticeCode.SHUTTING_DOWN,
            "back in 5\x1b[2J",
            "* relay notice: shutting down: back in 5\\x1b[2J",
        ),
    ],
)
def test_a_notice_says_its_name_and_the_relays_text_once_each(
    code: NoticeCode, text: str, line: str
) -> None:
    """The relay's kick read ``* relay notice: kicked: kicked``, its shutdown
    ``shutting_down: the relay is shutting down`` (found by review)."""
    assert render(NoticeReceived(code, text), as_json=False) == line
    assert json.loads(render(NoticeReceived(code, text), as_json=True)) == {
        "event": "notice",
        "notice": code.name.lower(),
        "text": text,
    }


def test_a_move_renders_with_both_addresses() -> None:
    roamed = Origin(OriginKind.SECURE_CLIENT, OTHER_KEY.public, ("127.0.0.1", 49223))
    moved = MemberMoved(roamed, ("127.0.0.1", 42345))
    assert render(moved, as_json=False) == "* 127.0.0.1:42345 moved to 127.0.0.1:49223"
    assert json.loads(render(moved, as_json=True)) == {
        "event": "moved",
        "peer": "127.0.0.1:49223",
        "previous": "127.0.0.1:42345",
        "profile": "secure",
        "key": client_id(OTHER_KEY.public),
    }


async def test_a_pinned_key_of_low_order_is_a_usage_error(tmp_path: Path) -> None:
    console = Console()
    status = await console.run("send", *flags(tmp_path, 5007, "--relay-key", "A" * 43 + "="), "x")
    assert status == ExitStatus.USAGE
    assert "low order" in console.err_lines()[-1]


async def test_a_known_relay_key_of_low_order_is_a_usage_error(tmp_path: Path) -> None:
    """As a pinned one is (it reached the connection, which raised: a traceback)."""
    (tmp_path / "known_relays").write_text(f"127.0.0.1:5007 {'A' * 43}=\n")
    (tmp_path / "known_relays").chmod(0o600)
    console = Console()
    assert await console.run("send", *flags(tmp_path, 5007), "x") == ExitStatus.USAGE
    assert "line 1" in console.err_lines()[-1]
    assert "low order" in console.err_lines()[-1]


async def test_a_relay_that_falls_silent_while_send_waits_for_room_exits_3(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 messages: once the relay has the first, it hears and says nothing more; send
    waits for room in the queue of 64 until the session is given up (unreachable):
    exit 3, as the README says (it was 1)."""
    # No message is abandoned at its deadline meanwhile, which would make room: send is
    # still waiting when the session ends.
    monkeypatch.setattr(sending, "MESSAGE_DEADLINE_S", 1000.0)
    console = Console()
    async with served_relay() as served:
        receive, sendto = served.relay.receive, served.sock.sendto

        def silent() -> bool:
            return bool(delivered_texts(served))

        def deaf(data: bytes, source: Address, now: float) -> None:
            if not silent():
                receive(data, source, now)

        async def mute(data: bytes, to: Address) -> int:
            return 0 if silent() else await sendto(data, to)

        served.relay.receive = deaf  # type: ignore[method-assign]
        served.sock.sendto = mute  # type: ignore[assignment, method-assign]
        argv = ["send", *flags(tmp_path, served.address[1]), *(f"m{n}" for n in range(200))]
        status = await run_command(argv, console.env)
    assert status == ExitStatus.UNREACHABLE, console.err_lines()
    assert "stopped answering" in console.err_lines()[-1]


async def test_a_key_remembered_meanwhile_is_kept_and_this_one_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clients learning one relay at once: the first key written stays, and a client
    that met another key says so (exit 5), as if the file had held it from the start."""

    def racing(path: Path, relay: str, key: bytes) -> bytes | None:
        path.write_text(f"{relay} {encode_key(OTHER_KEY.public)}\n")
        path.chmod(0o600)
        return remember_relay(path, relay, key)

    monkeypatch.setattr(secure_chat, "remember_relay", racing)
    async with served_relay() as served:
        console = Console()
        status = await console.run("send", *flags(tmp_path, served.address[1]), "hello")
        where = f"{LOOPBACK}:{served.address[1]}"
    assert status == ExitStatus.KEY_MISMATCH
    assert encode_key(OTHER_KEY.public) in console.err_lines()[-1]
    assert load_known_relays(tmp_path / "known_relays") == {where: OTHER_KEY.public}


def test_a_goodbye_has_the_time_the_connection_takes_for_it() -> None:
    """1.5 s cut short the ABANDONs a connection owes after its DISCONNECT's ACK (up to
    two RTOs of 2 s): the relay heard none of them (found by review)."""
    assert DISCONNECT_LIMIT_S > DISCONNECT_WAIT_S + ABANDON_GRACE_S
