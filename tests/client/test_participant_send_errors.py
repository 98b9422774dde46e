"""A send the system refuses for a moment (no route, say) is a lost datagram to a legacy
participant, counted; to chat, a line not sent. It ended the client with a traceback
(found by review)."""

import errno
from typing import cast

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.cli.console import send_lines
from mcrelay.client import Participant
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason
from support import LOOPBACK, Console


class UnroutedSocket:
    """Stands in for the participant's socket while the system has no route."""

    def getsockname(self) -> Address:
        return (LOOPBACK, 40001)

    async def sendto(self, data: bytes, address: Address) -> int:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")


async def test_keep_alives_and_the_goodbye_that_cannot_go_are_counted(
    autojump_clock: trio.testing.MockClock, keys: list[rsa.RSAPrivateKey]
) -> None:
    participant = Participant(
        cast(trio.socket.SocketType, UnroutedSocket()),
        (LOOPBACK, 5007),
        keys[1],
        keepalive_interval_s=1.0,
    )
    with trio.move_on_after(3.5):
        await participant.keepalive_loop()
    await participant.disconnect()
    assert participant.dropped == {DropReason.SEND_FAILED: 4}


async def test_a_chat_line_that_cannot_go_is_said_and_the_chat_goes_on() -> None:
    console = Console(stdin_text="first\nsecond\n")
    tried: list[bytes] = []

    async def send(data: bytes) -> None:
        tried.append(data)
        if data == b"first":
            raise OSError(errno.ENETUNREACH, "Network is unreachable")

    await send_lines(send, console.env, 1000)
    assert tried == [b"first", b"second"]
    assert console.err_lines() == ["mcrelay: not sent: Network is unreachable"]
