"""Who is in the relay: registration, re-keys, bad keys, timeouts, leaves and the
rate limits on key answers and registrations.

On the harness (``relay_harness``), with the mock clock: timeouts and token buckets
are checked at exact moments, and counts are exact.
"""

import logging
from dataclasses import replace

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.daemon.legacy.profile import identity
from mcrelay.daemon.relay import CLEANUP_INTERVAL_S
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft, ServerKey
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
from relay_harness import Harness, client_address, harness_config, open_relay, settle, stalled

Keys = list[rsa.RSAPrivateKey]


def fake(n: int) -> Address:
    """Sources on many loopback hosts (the per-host limits do not bite)."""
    return (f"127.0.{1 + n // 200}.{1 + n % 200}", 40000 + n)


async def test_a_newcomer_is_told_who_is_there_and_the_others_that_it_joined(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a, b = await harness.members(keys, 2)
        c = harness.peer(client_address(2), keys[3])
        c.send(legacy.key_request())
        c.register()
        await settle()
        assert a.take() == b.take() == [PeerJoined(c.address)]
        server_key = ServerKey(legacy.server_key(keys[0].public_key())[4:])
        assert c.take() == [server_key, PeerJoined(a.address), PeerJoined(b.address)]


async def test_a_silent_client_times_out_and_its_leave_is_announced(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], client_timeout_s=30.0) as harness:
        a, silent = await harness.members(keys, 2)
        start = trio.current_time()
        await trio.sleep_until(start + 20.0)
        a.send(legacy.keepalive())
        await trio.sleep_until(start + 30.0)
        assert silent.registered()  # silent for exactly the timeout: not yet
        await trio.sleep_until(start + 30.0 + CLEANUP_INTERVAL_S)
        await settle()
        assert not silent.registered()
        assert a.registered()
        assert a.take() == [PeerLeft(silent.address)]


async def test_a_rekey_is_announced_again_and_a_refresh_is_not(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a, raw = await harness.members(keys, 2)
        raw.register()  # the same key: a refresh only
        await settle()
        assert a.take() == []
        raw.rekey(keys[3])
        await settle()
        assert a.take() == [PeerJoined(raw.address)]
        member = harness.relay.roster.at(raw.address)
        assert member is not None
        assert member.identity.key_id == crypto.fingerprint(keys[3].public_key())


async def test_bad_keys_are_refused(keys: Keys, autojump_clock: trio.testing.MockClock) -> None:
    async with open_relay(keys[0]) as harness:
        raw = harness.peer(client_address(1), keys[2])
        pem = crypto.public_key_to_pem(keys[2].public_key())
        raw.send(encode_tlv(TlvType.CLIENT_PUBLIC_KEY, pem[:-60] + b"-----END-----\n"))
        raw.send(encode_tlv(TlvType.CLIENT_PUBLIC_KEY, b"abc"))
        await settle()
        assert harness.drops() == {"bad_key": 2}
        assert len(harness.relay.roster) == 0
        assert raw.take() == []


async def test_key_requests_are_answered_at_the_configured_rate(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    config = harness_config()
    async with open_relay(keys[0], config) as harness:
        raw = harness.peer(client_address(1), keys[2])
        raw.send(*[legacy.key_request()] * 20)
        await settle()
        burst = config.key_answers_per_source_burst
        assert len(raw.take()) == burst
        assert harness.drops() == {"rate_limited": 20 - burst}
        # One a second after that (key_answers_per_source_per_s = 1).
        await trio.sleep(1.0 / config.key_answers_per_source_per_s)
        raw.send(legacy.key_request(), legacy.key_request())
        await settle()
        assert len(raw.take()) == 1
        assert harness.drops() == {"rate_limited": 20 - burst + 1}


def waiting(harness: Harness) -> int:
    return harness.relay.statistics().profiles["legacy"]["registrations_waiting"]


async def test_registrations_over_the_rate_wait_for_it_and_are_made(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """The page: "on 4 the relay registers". A page client sends its key once: the 10
    over the rate were dropped, and those clients were never members (found by review:
    30 clients of one host, 20 registered)."""
    config = harness_config(registrations_per_host_burst=20, registrations_per_host_per_s=5.0)
    async with open_relay(keys[0], config) as harness:
        (watcher,) = await harness.members(keys, 1)
        peers = [harness.peer(client_address(1 + n), keys[2]) for n in range(30)]
        for peer in peers:
            peer.register()
        await settle()
        assert len(harness.relay.roster) == 20  # the watcher and 19
        assert waiting(harness) == 11
        peers[-1].send(legacy.disconnect())  # a waiting client that goes is not made
        peers[-2].rekey(keys[3])  # one that sends another key keeps its place
        await settle()
        assert waiting(harness) == 10
        await trio.sleep(11 / config.registrations_per_host_per_s)  # 5 a second
        assert len(harness.relay.roster) == 30
        assert waiting(harness) == 0
        assert not peers[-1].registered()
        rekeyed = harness.relay.roster.at(peers[-2].address)
        assert rekeyed is not None
        assert rekeyed.identity.key_id == identity(keys[3].public_key(), rekeyed.address).key_id
        joined = [event for event in watcher.take() if isinstance(event, PeerJoined)]
        assert len(joined) == 29  # each told once, the waiting ones as they were made
        assert harness.drops() == {}


async def test_a_registration_waits_a_client_timeout_at_most(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    config = harness_config(
        registrations_per_host_burst=1, registrations_per_host_per_s=0.01, client_timeout_s=5.0
    )
    async with open_relay(keys[0], config) as harness:
        first, late = (harness.peer(client_address(n), keys[1 + n]) for n in range(2))
        first.register()
        late.register()
        await settle()
        assert waiting(harness) == 1
        for _ in range(6):  # first keeps alive; late's turn does not come within 5 s
            await trio.sleep(1.0)
            first.send(legacy.keepalive())
        assert waiting(harness) == 0
        assert not late.registered()
        assert harness.drops() == {"rate_limited": 1}


async def test_registration_limits_are_settings_a_reload_changes(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    config = harness_config(
        max_clients_per_host=1, registrations_per_host_burst=1, registrations_per_host_per_s=0.001
    )
    ports = iter(range(100))

    def register_two(harness: Harness) -> None:
        for _ in range(2):
            harness.peer(client_address(next(ports)), keys[2]).register()

    async with open_relay(keys[0], config) as harness:
        relay = harness.relay
        register_two(harness)
        await settle()
        assert (len(relay.roster), harness.drops(), waiting(harness)) == (1, {}, 1)
        faster = replace(
            config, registrations_per_host_burst=5, registrations_per_host_per_s=1000.0
        )
        relay.reconfigure(faster)
        await trio.sleep(0.1)  # the bucket refills at the new rate; the waiting one goes
        assert (len(relay.roster), harness.dropped("registry_full")) == (1, 1)
        register_two(harness)
        await settle()
        assert (len(relay.roster), harness.dropped("registry_full")) == (1, 3)
        relay.reconfigure(replace(faster, max_clients_per_host=3))
        register_two(harness)
        await settle()
        assert len(relay.roster) == 3


async def test_a_client_back_before_its_leave_was_announced_is_seen_leaving_then_joining(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a, raw = await harness.members(keys, 2)
        harness.workers.hold()
        raw.say(b"from its first visit")  # in flight: its leave waits for it
        raw.send(legacy.disconnect())
        await settle()
        assert not raw.registered()
        assert harness.relay.statistics().leaves_pending == 1
        raw.take()
        raw.register()
        await settle()
        assert a.take() == [PeerLeft(raw.address), PeerJoined(raw.address)]
        assert PeerLeft(raw.address) not in raw.take()  # only the others see it leave
        assert harness.relay.statistics().leaves_pending == 0
        harness.workers.release()
        await settle()
        # The message still goes out, and its settling announces no second leave.
        assert a.take() == [MessageReceived(raw.address, b"from its first visit")]
        assert raw.registered()


async def test_a_client_that_keeps_alive_is_never_displaced_by_a_registration_flood(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    config = harness_config(max_clients=40, client_timeout_s=2.0, registrations_total_burst=1000)
    async with open_relay(keys[0], config) as harness:
        relay = harness.relay
        a, b = await harness.members(keys, 2)
        # Fill the registry, then churn: the flood's clients do not keep alive, so they
        # time out and new ones take their places, over and over, for two timeouts,
        # while a and b keep alive every 0.2 s.
        next_fake = 0
        for step in range(int(2 * config.client_timeout_s / 0.05)):
            if step % 4 == 0:
                a.send(legacy.keepalive())
                b.send(legacy.keepalive())
            while len(relay.roster) < config.max_clients:
                relay.handle_datagram(
                    legacy.client_key(keys[3].public_key()), fake(next_fake), trio.current_time()
                )
                next_fake += 1
            assert a.registered()
            assert b.registered()
            await trio.sleep(0.05)
        assert next_fake >= 2 * (config.max_clients - 2)  # the flood did churn: a second wave
        full = harness.dropped("registry_full")
        relay.handle_datagram(
            legacy.client_key(keys[3].public_key()), fake(next_fake), trio.current_time()
        )
        assert harness.dropped("registry_full") == full + 1
        a.take()
        b.take()
        a.say(b"still here")
        await settle()
        assert b.messages() == [MessageReceived(a.address, b"still here")]


async def test_already_present_notices_lost_to_a_full_backlog_are_each_counted(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """Found in review: only the first lost "already present" notice was counted."""
    async with open_relay(keys[0], send_queue_datagrams=3) as harness:
        await harness.members(keys, 3)
        newcomer = harness.peer(client_address(3), keys[4])
        before = harness.dropped("send_queue_full")
        with stalled(harness.sock):
            newcomer.register()  # 3 "joined" fill the backlog: its 3 "present" are lost
            await settle()
            assert harness.dropped("send_queue_full") - before == 3


async def test_a_waiting_re_key_of_a_member_that_leaves_is_not_made(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """Its DISCONNECT took a waiting registration out only for a source that was no
    member yet: a member's re-key waiting for the rate registered it again after it
    left, or was kicked (found by review)."""
    config = harness_config(registrations_per_host_burst=1, registrations_per_host_per_s=1.0)
    async with open_relay(keys[0], config) as harness:
        leaver, kicked = (harness.peer(client_address(n), keys[1 + n]) for n in range(2))
        leaver.register()
        await trio.sleep(1.0)
        kicked.register()
        await settle()
        leaver.rekey(keys[3])  # over the rate: waits
        kicked.rekey(keys[4])
        await settle()
        assert waiting(harness) == 2
        leaver.send(legacy.disconnect())
        member = harness.relay.roster.at(kicked.address)
        assert member is not None
        harness.relay.kick(member.id)
        await settle()
        assert waiting(harness) == 0
        await trio.sleep(3.0)
        assert not leaver.registered()
        assert not kicked.registered()


async def test_a_ban_placed_while_registrations_wait_keeps_them_out(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    config = harness_config(registrations_per_host_burst=2, registrations_per_host_per_s=1.0)
    async with open_relay(keys[0], config) as harness:
        peers = [harness.peer(client_address(n), keys[1 + n % 4]) for n in range(6)]
        for peer in peers:
            peer.register()
        await settle()
        assert waiting(harness) == 4
        member = harness.relay.roster.at(peers[0].address)
        assert member is not None
        harness.relay.kick(member.id, 3600.0, scope="host")
        await trio.sleep(10.0)
        assert len(harness.relay.roster) == 0
        assert harness.dropped("banned") == 4


async def test_a_newcomer_waits_behind_those_already_waiting(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """Oldest first: a newcomer took each token as it came, and the one waiting
    expired (found by review)."""
    config = harness_config(
        registrations_total_burst=1, registrations_total_per_s=1.0, client_timeout_s=5.0
    )
    async with open_relay(keys[0], config) as harness:
        harness.peer(("127.0.0.1", 1000), keys[1]).register()
        waiter = harness.peer(("127.0.0.2", 1000), keys[2])
        waiter.register()
        await settle()
        for n in range(3):
            await trio.sleep(1.0)
            harness.peer((f"127.0.1.{n}", 1000), keys[3]).register()
            await settle()
        assert waiter.registered()


async def test_key_requests_are_answered_at_once_while_a_registration_waits(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """The page: "on 7 the relay answers", under its answer rates alone. A request from
    a source whose registration waited was held until it was made, its retries too: a
    page client sending 4 then 7 waited 4.4 s for an answer it had the budget for, and
    past a client timeout got none (found by review)."""
    config = harness_config(registrations_per_host_burst=3, registrations_per_host_per_s=0.01)
    async with open_relay(keys[0], config) as harness:
        for n in range(5):  # 3 members, 2 waiting for their host's rate
            harness.peer(("127.0.0.2", 40000 + n), keys[1]).register()
        await settle()
        page_client = harness.peer(("127.0.0.2", 41000), keys[2])
        page_client.register()
        page_client.send(legacy.key_request())
        ours = harness.peer(("127.0.0.2", 41001), keys[3])  # 4 and 7 in one datagram
        ours.send(legacy.client_key(keys[3].public_key()) + legacy.key_request())
        await settle()
        server_key = ServerKey(legacy.server_key(keys[0].public_key())[4:])
        assert page_client.take() == ours.take() == [server_key]
        assert waiting(harness) == 4
        await trio.sleep(1.0)
        page_client.send(legacy.key_request())  # a retry: answered too
        await settle()
        assert page_client.take() == [server_key]
        assert harness.drops() == {}


async def test_a_drop_without_detail_is_logged_without_a_dangling_colon(
    keys: Keys, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """'dropped banned from 127.0.0.1:40000: ' (found by review)."""
    caplog.set_level(logging.DEBUG, logger="mcrelay.daemon.relay")
    async with open_relay(keys[0]) as harness:
        harness.relay.bans.ban(client_address(0), 60.0, trio.current_time())
        harness.relay.handle_datagram(legacy.keepalive(), client_address(0), trio.current_time())
        harness.relay.handle_datagram(b"", client_address(1), trio.current_time())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped ")]
    assert lines[0] == "dropped banned from 127.0.0.1:40000"
    assert lines[1].startswith("dropped malformed from 127.0.0.1:40001: ")
