"""SIGTERM and a hangup are listened for from a client command's start: a chat stopped
while it connects ends as one stopped later (0), and ``send`` says its goodbye as on
Ctrl-C, then exits 128 + the signal (found by review: killed, 143 or 129, and send's
DISCONNECT never went, so the others saw it time out 30 s later)."""

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from stub_secure_relay import served_relay
from test_secure_cli import flags

from mcrelay.cli.status import ExitStatus
from mcrelay.protocol.secure.header import DatagramType
from support import LOOPBACK, WAIT_S, Console, wait_until

RELAY_KEY_TEXT = "ejlAPztvZPMh8B9f+n9QCsMUuLainKb5giVsZHUul2U="


@contextmanager
def signals_survived() -> Iterator[None]:
    """A command that does not listen for SIGTERM or SIGHUP must not end the test run
    (the test then fails on its status instead)."""
    previous = {number: signal.signal(number, lambda *_: None) for number in TERMINATING}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


TERMINATING = [signal.SIGTERM, signal.SIGHUP]


async def silent_relay() -> tuple[trio.socket.SocketType, list[bytes]]:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind((LOOPBACK, 0))
    return sock, []


async def _listen(sock: trio.socket.SocketType, heard: list[bytes]) -> None:
    while True:
        data, _ = await sock.recvfrom(65536)
        heard.append(data)


@pytest.mark.parametrize("number", TERMINATING, ids=["sigterm", "sighup"])
@pytest.mark.parametrize(
    "profile", [[], ["--secure", "--relay-key", RELAY_KEY_TEXT]], ids=["legacy", "secure"]
)
async def test_a_chat_stopped_while_it_connects_ends_with_0(
    tmp_path: Path, number: signal.Signals, profile: list[str]
) -> None:
    sock, heard = await silent_relay()
    console = Console(environ={"XDG_STATE_HOME": str(tmp_path)})
    argv = ["chat", "--interface", LOOPBACK, "--relay", LOOPBACK, *profile]
    argv += ["--port", str(sock.getsockname()[1]), "--register-timeout", str(WAIT_S * 2)]
    statuses: list[ExitStatus] = []
    with sock, signals_survived(), trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_listen, sock, heard)

            async def chat() -> None:
                statuses.append(await console.run(*argv))
                nursery.cancel_scope.cancel()

            nursery.start_soon(chat)
            await wait_until(lambda: bool(heard))  # it is connecting
            os.kill(os.getpid(), number)
    assert statuses == [ExitStatus.OK]


@pytest.mark.parametrize(
    ("number", "status"),
    [(signal.SIGTERM, ExitStatus.TERMINATED), (signal.SIGHUP, ExitStatus.HUNG_UP)],
    ids=["sigterm", "sighup"],
)
async def test_a_secure_send_stopped_says_goodbye_and_exits_128_and_the_signal(
    tmp_path: Path, number: signal.Signals, status: ExitStatus
) -> None:
    async with served_relay() as served:
        held: list[bytes] = []
        after: list[bytes] = []

        def hold_data(data: bytes) -> bool:
            """No DATA of a member reaches the relay until the signal: send waits for the
            acknowledgement of its message; then every DATA does (its goodbye)."""
            if data[1] != DatagramType.DATA or not served.relay.members:
                return False
            (after if held and stopping else held).append(data)
            return not stopping

        stopping: list[bool] = []
        served.drop = hold_data
        statuses: list[ExitStatus] = []
        with signals_survived(), trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:

                async def send() -> None:
                    argv = ["send", *flags(tmp_path, served.address[1]), "-q", "hello"]
                    statuses.append(await Console().run(*argv))

                nursery.start_soon(send)
                await wait_until(lambda: bool(held))  # it went, and is not acknowledged
                stopping.append(True)
                os.kill(os.getpid(), number)
        assert statuses == [status]
        assert after  # the goodbye: a DISCONNECT the relay acknowledges at once
        member = next(iter(served.relay.members.values()))
        assert member.session.channel.statistics().acks_sent > 0
