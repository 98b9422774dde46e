"""Hostile input: a garbage flood beside real chat. (The fuzz target for the same
handler is ``fuzz/fuzz_datagram.py``; what it finds becomes a regression test here,
see ``fuzz/README.md``. The byte cap and key-request reflection: ``test_hostile_limits``.)

The flood feeds 50,000 datagrams into the relay on the harness, from fake sources,
from registered hostile sources and from unregistered strangers, while three clients
chat; the mock clock moves on between batches, so reassembly deadlines pass during
the flood. The fate of every datagram is predicted (``hostile_garbage``): the wire
decoder says which datagram-level drops it causes, a shadow reassembler fed the same
fragments at the same ``now`` says what reassembly does with them, and the relay's
own key says how each completed payload ends. So the drop counters are checked
exactly, reason by reason.

Nothing is ever sent to a fake source: they send no key requests and no key the relay
would accept, so the relay has no reason to answer them.
"""

import logging
import random
from collections import Counter

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa
from hostile_garbage import Garbage, Shadow, datagram_outcome

from mcrelay.daemon import relay
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
from relay_harness import RELAY_ADDRESS, Peer, client_address, open_relay, running_tasks, settle
from secure_harness import HarnessLink, SecurePeer, connected

Keys = list[rsa.RSAPrivateKey]
SEED = 20250611

FLOOD_DATAGRAMS = 50_000
FLOOD_HOSTILE = 15_000
"""Of the flood, fed from the registered hostile sources (fragments, mostly)."""
PROFILES = ("storm", "mixed", "messages")
"""One registered hostile source for each (see :meth:`Garbage.hostile_stream`)."""
FLOOD_STRANGER_DATAGRAMS = 750
"""Of the flood, from each of three unregistered strangers (and as many datagram-level
junk from the first hostile)."""
FLOOD_STRANGER_KEY_REQUESTS = 4
"""Plain key requests per stranger: under the per-source burst, all answered."""
FLOOD_BATCH = 250
BATCH_S = 0.01
"""Mock time between batches: the flood lasts 2 s, ten reassembly timeouts."""
CHAT_ROUNDS = 5
FLOOD_MAX_MESSAGE_BYTES = 1000
"""Six 2048-bit blocks, seven fragments: small enough that every size bound is cheap to hit."""
REASSEMBLY_TIMEOUT_S = 0.2
COMPLETIONS_BETWEEN_FLUSHES = 24
"""Messages one hostile completes before the flood lets the crypto stage drain, so
that none is refused as ``overloaded`` (128 per client) and the accounting stays exact."""


async def test_garbage_flood_while_three_clients_chat(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    relay_public = keys[0].public_key()
    rng = random.Random(SEED)
    garbage = Garbage(rng, relay_public, keys[4].public_key())
    expected: Counter[DropReason] = Counter()

    async with open_relay(
        keys[0],
        reassembly_timeout_s=REASSEMBLY_TIMEOUT_S,
        max_message_bytes=FLOOD_MAX_MESSAGE_BYTES,
    ) as harness:
        relay = harness.relay
        shadow = Shadow(relay.config, keys[0])
        chatters = [harness.peer(client_address(n), keys[1 + n]) for n in range(3)]
        hostiles = [harness.peer(client_address(10 + n), keys[4]) for n in range(len(PROFILES))]
        strangers = [harness.peer(client_address(20 + n), keys[4]) for n in range(3)]
        for peer in chatters + hostiles:
            peer.register()
        await settle()
        assert len(relay.roster) == len(chatters) + len(hostiles)
        real = {peer.address for peer in chatters + hostiles + strangers}

        # The flood, generated up front: (kind, datagram, who).
        share = FLOOD_HOSTILE // len(PROFILES)
        streams = [iter(garbage.hostile_stream(share, profile)) for profile in PROFILES]
        hostile_order = [i for i in range(len(PROFILES)) for _ in range(share)]
        rng.shuffle(hostile_order)  # the hostiles interleave; each keeps its own order
        hostile_feed = [(i, next(streams[i])) for i in hostile_order]
        stranger_feed: list[tuple[Peer, bytes]] = []
        for stranger in strangers:
            stranger_feed += [(stranger, legacy.key_request())] * FLOOD_STRANGER_KEY_REQUESTS
            for _ in range(FLOOD_STRANGER_DATAGRAMS - FLOOD_STRANGER_KEY_REQUESTS):
                data, counted, _ = garbage.acceptable(registered=False, fragments=True)
                stranger_feed.append((stranger, data))
                expected += counted
        for _ in range(FLOOD_STRANGER_DATAGRAMS):  # datagram-level junk from a registered source
            data, counted, _ = garbage.acceptable(registered=True, fragments=False)
            stranger_feed.append((hostiles[0], data))
            expected += counted
        rng.shuffle(stranger_feed)
        fake_feed: list[tuple[Address, bytes]] = []
        for _ in range(FLOOD_DATAGRAMS - len(hostile_feed) - len(stranger_feed)):
            source = ("127.0.0.1", rng.randrange(1024, 32768))
            if source == RELAY_ADDRESS:  # the relay's own: dropped as such, not as garbage
                source = ("127.0.0.1", RELAY_ADDRESS[1] + 1)
            assert source not in real
            data, counted, _ = garbage.acceptable(registered=False, fragments=True)
            fake_feed.append((source, data))
            expected += counted
        kinds = (
            ["fake"] * len(fake_feed)
            + ["hostile"] * len(hostile_feed)
            + ["stranger"] * len(stranger_feed)
        )
        assert len(kinds) == FLOOD_DATAGRAMS
        rng.shuffle(kinds)
        batches = [kinds[i : i + FLOOD_BATCH] for i in range(0, len(kinds), FLOOD_BATCH)]
        texts = [
            (n % 3, f"{n}: real chat from {n % 3} é ✓ ".encode() + b"z" * (n * 60))
            for n in range(3 * CHAT_ROUNDS)
        ]
        chat_at = {len(batches) * n // len(texts): n for n in range(len(texts))}

        for peer in chatters:
            peer.take()
        before = Counter(relay.counters.dropped)
        in_before = relay.counters.datagrams_in
        baseline_tasks = running_tasks()
        completions = [0] * len(hostiles)
        fakes, hostile_items, stranger_items = (
            iter(fake_feed),
            iter(hostile_feed),
            iter(stranger_feed),
        )
        for number, batch in enumerate(batches):
            for kind in batch:
                if kind == "fake":
                    source, data = next(fakes)
                    relay.handle_datagram(data, source, trio.current_time())
                elif kind == "hostile":
                    index, data = next(hostile_items)
                    hostile, now = hostiles[index], trio.current_time()
                    hostile.send(data)
                    outcome = datagram_outcome(data, registered=True)
                    assert outcome is not None
                    expected += outcome[0]
                    for fragment in outcome[1]:
                        completions[index] += shadow.fragment(hostile.address, fragment, now)
                    if completions[index] >= COMPLETIONS_BETWEEN_FLUSHES:
                        await settle()
                        assert relay.statistics().pending_relays == 0
                        completions = [0] * len(hostiles)
                else:
                    peer, data = next(stranger_items)
                    peer.send(data)
            if number in chat_at:
                sender, text = texts[chat_at[number]]
                chatters[sender].say(text, chat_at[number].to_bytes(4, "big"))
            await trio.sleep(BATCH_S)
        assert relay.counters.datagrams_in - in_before == FLOOD_DATAGRAMS + sum(
            len(chatters[0].message(text)) for _, text in texts
        )

        # Every message in reassembly reaches its deadline; nothing stays in flight.
        shadow.finish()
        expected += shadow.drops
        await trio.sleep(REASSEMBLY_TIMEOUT_S)
        await settle()

        # Every real message reached each other chatter exactly once; so did each valid
        # hostile message (replays within the deadline were dropped).
        for me, chatter in enumerate(chatters):
            want: Counter[tuple[Address, bytes]] = Counter(
                {(chatters[s].address, t): 1 for s, t in texts if s != me}
            )
            want += shadow.deliveries
            got = Counter((m.sender, m.data) for m in chatter.messages())
            assert got == want

        # Each drop under its reason, and all of them accounted for.
        caused = Counter(relay.counters.dropped) - before
        assert caused == expected
        for reason in (
            "malformed",
            "unknown_type",
            "unregistered",
            "bad_key",
            "invalid_fragment",
            "duplicate_fragment",
            "late_fragment",
            "source_limit",
            "reassembly_timeout",
            "bad_payload",
            "decrypt_failed",
            "too_large",
        ):
            assert caused[DropReason(reason)] > 0, reason
        assert relay.counters.dropped[DropReason.INTERNAL_ERROR] == 0
        # No leak: nothing held, nothing pending, no task more than before the flood.
        statistics = relay.statistics()
        assert (statistics.reassembly_in_flight, statistics.reassembly_bytes) == (0, 0)
        assert (statistics.pending_relays, statistics.send_queue) == (0, 0)
        assert running_tasks() == baseline_tasks
        assert {member.address for member in relay.roster} == {
            peer.address for peer in chatters + hostiles
        }
        # Nothing went to a fake source; each stranger got its key answers, and no more.
        assert {address for _, address in harness.sock.sent} <= real
        for stranger in strangers:
            assert len(harness.sent_to(stranger.address)) == FLOOD_STRANGER_KEY_REQUESTS
        print(
            f"flood: {FLOOD_DATAGRAMS} datagrams, {relay.counters.datagrams_in} in, "
            f"{relay.counters.messages_relayed} relayed ({shadow.deliveries.total()} hostile), "
            f"drops {', '.join(f'{r.value}={n}' for r, n in sorted(caused.items()))}"
        )


async def test_refused_keys_are_all_counted_and_logged_once_a_minute(
    keys: list[rsa.RSAPrivateKey],
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Four bad keys a datagram, before any rate limit: from spoofable sources, each was a
    log line (20,000 lines from 5,000 datagrams; found by review). Each is refused and
    counted (as acting on each in turn would), in one line a minute at most."""
    caplog.set_level(logging.INFO)
    bad_keys = b"".join(encode_tlv(TlvType.CLIENT_PUBLIC_KEY, b"not a key") for _ in range(4))
    async with open_relay(keys[0]) as harness:
        for n in range(10):
            harness.peer(client_address(n), keys[1]).send(bad_keys)
        await settle()
        assert harness.drops() == {"bad_key": 40}
        await trio.sleep(60)
        harness.peer(client_address(10), keys[1]).send(bad_keys)
        await settle()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("mcrelay.daemon")]
    assert len(lines) == 2
    assert lines[0].endswith("(4 refused since the last such line)")
    assert lines[1].endswith("(40 refused since the last such line)")


async def test_receive_errors_are_said_once_a_minute_at_most(
    keys: list[rsa.RSAPrivateKey],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each one was a warning line, however often it came (found by review)."""

    def refused(_size: int) -> tuple[bytes, Address]:
        raise OSError(111, "Connection refused")

    async with open_relay(keys[0]) as harness:
        monkeypatch.setattr(harness.sock, "recvfrom", refused)
        for _ in range(50):
            harness.relay._receive_batch()
        await trio.sleep(61.0)
        harness.relay._receive_batch()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("receive failed")]
    assert lines == [
        "receive failed: [Errno 111] Connection refused (0 more since the last such line)",
        "receive failed: [Errno 111] Connection refused (49 more since the last such line)",
    ]


async def test_spoofed_joins_and_leaves_write_a_bounded_number_of_lines(
    keys: list[rsa.RSAPrivateKey],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Spoofed legacy registrations and their DISCONNECTs wrote a join and a leave line
    each, 240 a second, unbounded (found by review)."""
    caplog.set_level(logging.INFO)
    spoofed = legacy.client_key(keys[1].public_key())
    async with open_relay(keys[0], registrations_total_burst=1000) as harness:
        for n in range(150):  # 300 lines' worth
            source = (f"127.0.{n // 50}.{n % 50 + 1}", 4000)
            harness.relay.handle_datagram(spoofed, source, trio.current_time())
            harness.relay.handle_datagram(legacy.disconnect(), source, trio.current_time())
            await settle()
        await trio.sleep(10.0)
        harness.relay.handle_datagram(spoofed, ("127.0.9.9", 4000), trio.current_time())
        await settle()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("client ")]
    assert len(lines) == relay.PRESENCE_LOG_BURST + 1
    assert lines[-1] == (
        "client 127.0.9.9:4000 joined (200 joins, leaves and moves not logged before this one)"
    )


async def test_one_key_replacing_its_session_writes_a_bounded_number_of_lines(
    keys: list[rsa.RSAPrivateKey],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each replacement of a secure member's session wrote its line outside the budget
    of presence lines, as fast as registrations go (found by review)."""
    caplog.set_level(logging.INFO)
    async with open_relay(
        keys[0], registrations_per_host_burst=1000, registrations_total_burst=1000
    ) as harness:
        (first,) = await connected(harness, 1)
        for n in range(1, relay.PRESENCE_LOG_BURST + 50):
            again = SecurePeer(
                HarnessLink(harness), client_address(n), static=first.static, epoch=first.epoch + n
            )
            await again.connect()
        elapsed = trio.current_time()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("client ")]
    assert len(lines) <= relay.PRESENCE_LOG_BURST + elapsed * relay.PRESENCE_LOG_PER_S + 1
    assert lines[-1].endswith("not logged before this one)")


async def test_one_key_answer_a_datagram(
    keys: list[rsa.RSAPrivateKey], autojump_clock: trio.testing.MockClock
) -> None:
    """Four SERVER_KEY_REQUESTs in one datagram earned four answers: 16 bytes, 1,820
    back (found by review)."""
    async with open_relay(keys[0]) as harness:
        source = client_address(1)
        harness.relay.handle_datagram(legacy.key_request() * 4, source, trio.current_time())
        await settle()
        assert len([to for _, to in harness.sock.sent if to == source]) == 1
        assert harness.drops() == {}  # the decoder passes over the repeats
