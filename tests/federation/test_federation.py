"""Relays that federate over real nats-servers on loopback: legacy members on three
relays see each other come and go and talk across them; a silent relay's members
leave with its lease; kicks are forwarded; bad envelopes are counted drops.

The leases and snapshots are shortened (0.2 s snapshots, a 1 s lease) so that the
tests take a fraction of their real time; the bench measures the real ones.
"""

import base64
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import cast

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived, PeerPresent
from mcrelay.daemon.relay import Relay
from mcrelay.federation.link import Link
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from mcrelay.service import Daemon
from natsserver import NatsServer
from support import WAIT_S, events_until, join, relay_config, running_daemon, wait_until

Keys = list[rsa.RSAPrivateKey]
SNAPSHOT_S = 0.2
LEASE_S = 1.0


@pytest.fixture
def cluster_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "federation.key"
    path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    path.chmod(0o600)
    return path


def link(relay: Relay) -> Link:
    return cast(Link, relay.federation)


@asynccontextmanager
async def federated(
    relay_key_file: Path, cluster_key_file: Path, urls: Sequence[str], **overrides: object
) -> AsyncIterator[list[Daemon]]:
    """One relay per URL (r1, r2, ...), each on its own nats-server, short leases."""
    async with AsyncExitStack() as stack:
        daemons = []
        for number, url in enumerate(urls, 1):
            config = relay_config(
                relay_key_file,
                federation=url,
                federation_key_file=cluster_key_file,
                relay_name=f"r{number}",
                **overrides,
            )
            daemon = await stack.enter_async_context(running_daemon(config))
            link(daemon.relay).snapshot_interval_s = SNAPSHOT_S
            daemon.relay.remotes.lease_s = LEASE_S
            daemons.append(daemon)
        with trio.fail_after(WAIT_S):
            for daemon in daemons:
                await wait_until(lambda d=daemon: len(d.relay.remotes.relays) == len(urls) - 1)  # type: ignore[misc]
        yield daemons


async def test_legacy_members_of_three_relays_meet_and_talk(
    relay_key_file: Path, cluster_key_file: Path, keys: Keys, nats_cluster: list[NatsServer]
) -> None:
    urls = [server.url for server in nats_cluster]
    async with federated(relay_key_file, cluster_key_file, urls) as (one, two, three):
        async with (
            join(one.relay, keys[1]) as a,
            join(two.relay, keys[2]) as b,
        ):
            await events_until(a, lambda e: e in (PeerJoined(b.address), PeerPresent(b.address)))
            async with join(three.relay, keys[3]) as c:
                await events_until(a, lambda e: e == PeerJoined(c.address))
                await events_until(b, lambda e: e == PeerJoined(c.address))
                await a.send("hello from one")
                for member in (b, c):
                    await events_until(
                        member, lambda e: e == MessageReceived(a.address, b"hello from one")
                    )
                await c.send("and back")
                await events_until(a, lambda e: e == MessageReceived(c.address, b"and back"))
            await events_until(a, lambda e: e == PeerLeft(c.address))
            await events_until(b, lambda e: e == PeerLeft(c.address))
        ids = {m.id for m in one.relay.remotes}
        assert ids <= {f"r2/{b.address[0]}:{b.address[1]}", f"r3/{c.address[0]}:{c.address[1]}"}
        for daemon in (one, two, three):
            assert link(daemon.relay).dropped == {}
            assert link(daemon.relay).gaps == 0
