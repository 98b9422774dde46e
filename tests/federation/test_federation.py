"""Relays that federate over real nats-servers on loopback: legacy members on three
relays see each other come and go and talk across them; a silent relay's members
leave with its lease; kicks are forwarded; bad envelopes are counted drops.

The leases and snapshots are shortened (0.2 s snapshots, a 1 s lease) so that the
tests take a fraction of their real time; the bench measures the real ones.
"""

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import cast

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.cli.status import ExitStatus
from mcrelay.client import MessageReceived, PeerPresent
from mcrelay.daemon.relay import Relay
from mcrelay.federation.bus import BusOptions, Incoming
from mcrelay.federation.keyfile import cluster_key_fingerprint, read_cluster_key
from mcrelay.federation.link import Link
from mcrelay.protocol.addresses import RELAY_ITSELF
from mcrelay.protocol.federation.envelope import ENVELOPE_VERSION, Header, Kind, seal_envelope
from mcrelay.protocol.legacy.crypto import key_digest
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from mcrelay.protocol.secure.messages import RelayedChat
from mcrelay.protocol.secure.origins import Origin, OriginKind
from mcrelay.service import Daemon, serve
from natsserver import NatsServer, client_names, open_bus
from secure_harness import secure_peer
from support import WAIT_S, Console, events_until, join, relay_config, running_daemon, wait_until

Keys = list[rsa.RSAPrivateKey]
SNAPSHOT_S = 0.2
LEASE_S = 1.0


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
            # At most the first snapshots of a run heard before its answer came.
            assert set(link(daemon.relay).dropped) <= {"envelope_unverified"}
            assert link(daemon.relay).gaps == 0


async def test_secure_and_legacy_members_of_two_relays_talk(
    relay_key_file: Path, cluster_key_file: Path, keys: Keys, nats_server: NatsServer
) -> None:
    urls = [nats_server.url] * 2
    async with federated(relay_key_file, cluster_key_file, urls) as (one, two):
        async with join(one.relay, keys[1]) as a, secure_peer(two.relay) as s:
            await s.connect()
            await wait_until(lambda: one.relay.remotes.get(f"r2/{s.id}") is not None)
            await a.send("to a secure member")
            chats: list[RelayedChat] = []
            with trio.fail_after(WAIT_S):
                while not chats:
                    chats = [m for m in await s.wait_for(1) if isinstance(m, RelayedChat)]
            (chat,) = chats
            legacy_origin = Origin(
                OriginKind.LEGACY_CLIENT, key_digest(keys[1].public_key()), a.address
            )
            assert chat == RelayedChat(legacy_origin, b"to a secure member")
            await s.say(b"and to a legacy one")
            await events_until(a, lambda e: e == MessageReceived(s.address, b"and to a legacy one"))


async def test_a_silent_relay_has_its_members_leave_everywhere_within_the_lease(
    relay_key_file: Path, cluster_key_file: Path, keys: Keys, nats_server: NatsServer
) -> None:
    urls = [nats_server.url] * 2
    async with federated(relay_key_file, cluster_key_file, [urls[0]]) as (one,):
        async with join(one.relay, keys[1]) as a:
            config = relay_config(
                relay_key_file,
                federation=urls[1],
                federation_key_file=cluster_key_file,
                relay_name="r2",
            )
            async with trio.open_nursery() as nursery:
                two: Daemon = await nursery.start(serve, config)
                link(two.relay).snapshot_interval_s = SNAPSHOT_S
                async with join(two.relay, keys[2]) as b:
                    await events_until(a, lambda e: e == PeerJoined(b.address))
                    # The relay goes silent at once, as with kill -9: no leave is sent.
                    nursery.cancel_scope.cancel()
            start = trio.current_time()
            await events_until(a, lambda e: e == PeerLeft(b.address))
            assert trio.current_time() - start <= LEASE_S + 1.0
            assert one.relay.remotes.relays == {}


async def test_a_kick_of_another_relays_member_is_forwarded(
    relay_key_file: Path,
    cluster_key_file: Path,
    keys: Keys,
    nats_server: NatsServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    urls = [nats_server.url] * 2
    async with federated(relay_key_file, cluster_key_file, urls, api="127.0.0.1:0") as (one, two):
        async with join(one.relay, keys[1]) as a, join(two.relay, keys[2]) as b:
            await events_until(a, lambda e: e in (PeerJoined(b.address), PeerPresent(b.address)))
            remote = f"r2/{b.address[0]}:{b.address[1]}"
            async with httpx.AsyncClient(base_url=one.api_urls[0]) as api:
                listed = (await api.get("/v1/clients", params={"relay": "r2"})).json()
                assert [c["id"] for c in listed["clients"]] == [remote]
                local = (await api.get("/v1/clients", params={"scope": "local"})).json()
                assert [c["relay"] for c in local["clients"]] == ["r1"]
                caplog.set_level(logging.INFO, logger="mcrelay")
                kicked = await api.delete(f"/v1/clients/{remote}", params={"ban_s": "60"})
                assert kicked.status_code == 200
                assert kicked.json()["removed"] == [remote]
                # The audit line said r2/r2/...; the relay that did it, no ban (review).
                said = [r.getMessage() for r in caplog.records]
                assert f"API: kicked {remote}, banned (address) for 60 s; 1 removed" in said
                local_id = remote.removeprefix("r2/")
                done = f"kicked {local_id} at relay r1's request, banned (address) for 60 s"
                assert done in said
                await events_until(a, lambda e: e == PeerLeft(b.address))
                assert two.relay.roster.get(f"{b.address[0]}:{b.address[1]}") is None
                assert two.relay.bans.is_banned(b.address, trio.current_time())
                metrics = (await api.get("/metrics")).text
                assert "mcrelay_federation_bus_connected 1.0" in metrics
                assert "mcrelay_federation_relays 1.0" in metrics
                relays = (await api.get("/v1/relays")).json()
                assert [r["name"] for r in relays["relays"]] == ["r1", "r2"]
                assert relays["federation"]["bus"] == "connected"
                missing = await api.delete("/v1/clients/r2/127.0.0.1:1")
                assert missing.status_code == 404


async def test_a_kick_its_relay_does_not_answer_is_a_504(
    relay_key_file: Path,
    cluster_key_file: Path,
    keys: Keys,
    nats_server: NatsServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mcrelay")
    async with federated(
        relay_key_file, cluster_key_file, [nats_server.url], api="127.0.0.1:0"
    ) as (one,):
        config = relay_config(
            relay_key_file,
            federation=nats_server.url,
            federation_key_file=cluster_key_file,
            relay_name="r2",
        )
        async with trio.open_nursery() as nursery:
            two: Daemon = await nursery.start(serve, config)
            async with join(two.relay, keys[2]) as b:
                remote = f"r2/{b.address[0]}:{b.address[1]}"
                await wait_until(lambda: one.relay.remotes.get(remote) is not None)
                nursery.cancel_scope.cancel()
        # Gone, and still held until its lease runs out: nobody answers for it.
        async with httpx.AsyncClient(base_url=one.api_urls[0], timeout=10) as api:
            answer = await api.delete(f"/v1/clients/{remote}")
        assert answer.status_code == 504
        error = answer.json()["error"]
        assert error["code"] == "relay_timeout"
        # A stalled relay did it, and its ban, once it caught up (found by review): the
        # answer said it failed, and the asking was logged nowhere.
        assert "it may still carry it out" in error["message"]
        said = [r.getMessage() for r in caplog.records if r.name == "mcrelay.api.audit"]
        assert said == [f"API: asked relay r2 to kick {remote}: no answer in time"]


def connected(*daemons: Daemon) -> bool:
    return all(link(d.relay).status()["bus"] == "connected" for d in daemons)


async def test_relaying_resumes_after_a_nats_server_restart_and_losses_are_counted(
    relay_key_file: Path, cluster_key_file: Path, keys: Keys, nats_server: NatsServer
) -> None:
    async with federated(relay_key_file, cluster_key_file, [nats_server.url] * 2) as (one, two):
        async with join(one.relay, keys[1]) as a, join(two.relay, keys[2]) as b:
            await events_until(b, lambda e: e in (PeerJoined(a.address), PeerPresent(a.address)))
            await a.send("before")
            await events_until(b, lambda e: e == MessageReceived(a.address, b"before"))
            await trio.to_thread.run_sync(nats_server.stop)
            await wait_until(lambda: not connected(one, two))
            await a.send("while the bus is down")
            await wait_until(lambda: link(one.relay).status()["envelopes_dropped"] != {})
            await trio.to_thread.run_sync(nats_server.start)
            await wait_until(lambda: connected(one, two))
            await wait_until(lambda: len(two.relay.remotes) == 1)
            await a.send("after the restart")
            seen = await events_until(
                b, lambda e: e == MessageReceived(a.address, b"after the restart")
            )
            assert MessageReceived(a.address, b"while the bus is down") not in seen
        status = link(one.relay).status()
        dropped = status["envelopes_dropped"]
        assert isinstance(dropped, dict)
        assert dropped.get("publish_disconnected", 0) >= 1
        assert status["reconnects"] == 1
        assert link(two.relay).gaps >= 1  # r1's message lost while down: a gap at r2


async def test_bad_envelopes_are_counted_drops(
    relay_key_file: Path,
    cluster_key_file: Path,
    keys: Keys,
    nats_server: NatsServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with federated(relay_key_file, cluster_key_file, [nats_server.url] * 2) as (one, two):
        subject = link(one.relay).subjects.msg
        options = BusOptions(servers=(nats_server.url,), name="attacker")
        async with open_bus(options, [subject]) as spy:
            async with join(one.relay, keys[1]) as a, join(two.relay, keys[2]) as b:
                await events_until(
                    a, lambda e: e in (PeerJoined(b.address), PeerPresent(b.address))
                )
                await wait_until(lambda: spy.state == "connected")
                await b.send("genuine")
                await events_until(a, lambda e: e == MessageReceived(b.address, b"genuine"))
                captured = [i for i in await spy.receive() if isinstance(i, Incoming)]
                genuine = captured[0].data
                header = Header(ENVELOPE_VERSION, Kind.MSG, "r9", 1, 1)
                dropped = link(one.relay).dropped
                before = dropped.copy()  # (a run's snapshots before its answer count too)
                for data in (
                    b"",
                    b"\x02garbage",
                    genuine[:-3],
                    b"\x03" + genuine[1:],
                    seal_envelope(os.urandom(32), header, b"x"),
                    genuine,  # a replay
                ):
                    assert spy.publish(subject, data)
                expected = {
                    "bad_envelope": 2,
                    "envelope_auth": 2,
                    "envelope_version": 1,
                    "envelope_replay": 1,
                }
                await wait_until(
                    lambda: all(dropped[k] - before[k] >= n for k, n in expected.items())
                )
                assert {k: dropped[k] - before[k] for k in expected} == expected
                # Said, once a minute at most, with the key's fingerprint to compare (it
                # was only a counter: found by review).
                said = [r for r in caplog.records if "another envelope version" in r.message]
                assert len(said) == 2  # one line at each relay (found by review)
                said = [r for r in caplog.records if "failed authentication" in r.message]
                assert len(said) == 2  # one line at each relay, for its two
                fingerprint = cluster_key_fingerprint(read_cluster_key(cluster_key_file))
                assert all(r.levelname == "WARNING" and fingerprint in r.message for r in said)
                await b.send("still relayed")
                await events_until(a, lambda e: e == MessageReceived(b.address, b"still relayed"))


async def test_a_node_failure_in_the_nats_cluster_is_survived(
    relay_key_file: Path, cluster_key_file: Path, keys: Keys, nats_cluster: list[NatsServer]
) -> None:
    first, second, third = nats_cluster
    urls = [f"{first.url},{second.url}", third.url]
    async with federated(relay_key_file, cluster_key_file, urls) as (one, two):
        async with join(one.relay, keys[1]) as a, join(two.relay, keys[2]) as b:
            await events_until(b, lambda e: e in (PeerJoined(a.address), PeerPresent(a.address)))
            # r1's client picks one of its two servers at random: kill that one.
            (used,) = [n for n in (first, second) if "mcrelay r1" in client_names(n)]
            await trio.to_thread.run_sync(used.kill)
            await wait_until(lambda: link(one.relay).status()["reconnects"] == 1)
            await wait_until(lambda: connected(one))
            await a.send("through another node")
            await events_until(
                b, lambda e: e == MessageReceived(a.address, b"through another node")
            )


async def test_a_relay_that_stops_has_its_members_leave_at_once(
    relay_key_file: Path, cluster_key_file: Path, keys: Keys, nats_server: NatsServer
) -> None:
    async with federated(relay_key_file, cluster_key_file, [nats_server.url] * 2) as (one, two):
        one.relay.remotes.lease_s = 60.0  # the leave cannot come from the lease
        async with join(one.relay, keys[1]) as a, join(two.relay, keys[2]) as b:
            await events_until(a, lambda e: e in (PeerJoined(b.address), PeerPresent(b.address)))
            two.relay.stop_receiving()
            await events_until(a, lambda e: e == PeerLeft(b.address))
            await trio.sleep(3 * SNAPSHOT_S)  # its later snapshots do not bring it back
            assert one.relay.remotes.get(f"r2/{b.address[0]}:{b.address[1]}") is None


async def test_the_cli_shows_relays_and_other_relays_members_and_posts_across(
    relay_key_file: Path, cluster_key_file: Path, keys: Keys, nats_server: NatsServer
) -> None:
    async with federated(
        relay_key_file, cluster_key_file, [nats_server.url] * 2, api="127.0.0.1:0"
    ) as (one, two):
        api = one.api_urls[0].removeprefix("http://")
        # Not a test of leases: on a loaded machine the 1 s one ran out before the kick,
        # which then found no such member (exit 1).
        one.relay.remotes.lease_s = two.relay.remotes.lease_s = 30.0
        async with join(one.relay, keys[1]) as a, join(two.relay, keys[2]) as b:
            await events_until(a, lambda e: e in (PeerJoined(b.address), PeerPresent(b.address)))
            relays = Console()
            assert await relays.run("relays", "--api", api) == ExitStatus.OK
            text = relays.stdout.getvalue()
            assert "r1" in text
            assert "r2" in text
            assert "connected" in text
            remote = f"r2/{b.address[0]}:{b.address[1]}"
            listed = Console()
            assert await listed.run("clients", "--api", api, "--relay", "r2") == ExitStatus.OK
            assert [line.split()[0] for line in listed.out_lines()[1:]] == [remote]
            local = Console()
            assert await local.run("post", "--api", api, "--local", "here only") == 0
            await events_until(a, lambda e: e == MessageReceived(RELAY_ITSELF, b"here only"))
            everywhere = Console()
            assert await everywhere.run("post", "--api", api, "to all") == ExitStatus.OK
            seen = await events_until(b, lambda e: e == MessageReceived(RELAY_ITSELF, b"to all"))
            assert MessageReceived(RELAY_ITSELF, b"here only") not in seen
            kicked = Console()
            assert await kicked.run("kick", "--api", api, remote) == ExitStatus.OK
            await events_until(a, lambda e: e == PeerLeft(b.address))


async def test_secure_members_of_three_relays_on_a_cluster_see_each_other(
    relay_key_file: Path, cluster_key_file: Path, nats_cluster: list[NatsServer]
) -> None:
    urls = [server.url for server in nats_cluster]
    async with federated(relay_key_file, cluster_key_file, urls) as (one, two, three):
        async with (
            secure_peer(one.relay) as s1,
            secure_peer(two.relay) as s2,
            secure_peer(three.relay) as s3,
        ):
            for peer in (s1, s2, s3):
                await peer.connect()
            members = [("r1", s1), ("r2", s2), ("r3", s3)]
            for daemon, (name, _) in zip((one, two, three), members, strict=True):
                for remote in [f"{n}/{peer.id}" for n, peer in members if n != name]:
                    await wait_until(lambda d=daemon, r=remote: d.relay.remotes.get(r) is not None)  # type: ignore[misc]
            await s3.say(b"from three")
            for peer in (s1, s2):
                chats: list[RelayedChat] = []
                with trio.fail_after(WAIT_S):
                    while not chats:
                        chats = [m for m in await peer.wait_for(1) if isinstance(m, RelayedChat)]
                origin = Origin(OriginKind.SECURE_CLIENT, s3.static.public, s3.address)
                assert chats == [RelayedChat(origin, b"from three")]
