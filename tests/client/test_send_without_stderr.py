"""``send`` whose stderr reader has gone (``2>&1 | true``) still sends, in both profiles,
and exits by its outcome: the broken pipe of its 'registered as' line ended it at once
with 0, having sent nothing (found by review)."""

import io
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from stub_secure_relay import served_relay
from test_secure_cli import delivered_texts, flags

from mcrelay.cli.environment import Environment
from mcrelay.cli.main import run_command
from mcrelay.cli.status import ExitStatus
from mcrelay.client import MessageReceived
from mcrelay.protocol.legacy.events import PeerJoined
from support import LOOPBACK, WAIT_S, join, next_event, relay_config, running_relay


class GoneReader(io.StringIO):
    """A pipe whose reader has gone."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def env_without_stderr(stdout: io.StringIO) -> Environment:
    return Environment(stdin=io.StringIO(""), stdout=stdout, stderr=GoneReader(), environ={})


async def test_a_legacy_send_without_stderr_sends(
    relay_key_file: Path, keys: list[rsa.RSAPrivateKey]
) -> None:
    env = env_without_stderr(io.StringIO())
    async with running_relay(relay_config(relay_key_file)) as relay, join(relay, keys[1]) as a:
        argv = ["send", "--interface", LOOPBACK, "--port", str(relay.address[1]), "must arrive"]
        with trio.fail_after(WAIT_S):
            assert await run_command(argv, env) == ExitStatus.OK
        joined = await next_event(a)
        assert isinstance(joined, PeerJoined)
        assert await next_event(a) == MessageReceived(joined.peer, b"must arrive")
    assert env.stderr_gone


async def test_a_secure_send_without_stderr_sends(tmp_path: Path) -> None:
    env = env_without_stderr(io.StringIO())
    async with served_relay() as served:
        argv = ["send", *flags(tmp_path, served.address[1]), "must arrive"]
        with trio.fail_after(WAIT_S):
            assert await run_command(argv, env) == ExitStatus.OK
        assert delivered_texts(served) == [b"\x01must arrive", b"\x04"]


async def test_a_failure_without_stderr_still_exits_by_it(tmp_path: Path) -> None:
    env = env_without_stderr(io.StringIO())
    argv = ["send", *flags(tmp_path, 9), "--relay-key", "not a key", "x"]
    with trio.fail_after(WAIT_S):
        assert await run_command(argv, env) == ExitStatus.USAGE
