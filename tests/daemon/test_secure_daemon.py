"""The secure profile on a whole daemon, over UDP on loopback."""

from pathlib import Path

import pytest
import trio.lowlevel

from mcrelay.protocol.addresses import Address
from secure_harness import secure_peer
from support import relay_config, running_daemon, wait_until


async def test_a_datagram_that_breaks_a_profile_costs_that_datagram(
    relay_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = relay_config(relay_key_file)
    async with running_daemon(config) as daemon, secure_peer(daemon.relay) as a:
        relay = daemon.relay
        secure = relay.secure
        assert secure is not None
        handle = secure.datagram_untrusted

        def broken_once(data: bytes, source: Address, now: float) -> None:
            monkeypatch.setattr(secure, "datagram_untrusted", handle)
            raise RuntimeError("a bug")

        monkeypatch.setattr(secure, "datagram_untrusted", broken_once)
        a.send(a.initiator().datagram)
        await wait_until(lambda: relay.statistics().dropped["internal_error"] == 1)
        await a.connect()  # the relay goes on
        await wait_until(lambda: relay.roster.get(a.id) is not None)


async def test_a_disconnect_is_acknowledged_before_the_session_closes(
    relay_key_file: Path,
) -> None:
    config = relay_config(relay_key_file)
    async with running_daemon(config) as daemon, secure_peer(daemon.relay) as a:
        await a.connect()
        await wait_until(lambda: daemon.relay.roster.get(a.id) is not None)
        await a.leave()
        session = a.session
        assert session is not None

        def acknowledged() -> bool:
            a.receive()
            return session.channel.statistics().in_flight == 0

        await wait_until(acknowledged)
        assert daemon.relay.roster.get(a.id) is None
        await trio.lowlevel.checkpoint()
