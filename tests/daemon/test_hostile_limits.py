"""Hostile input against the relay's bounds: the global reassembly byte cap (a
reassembler alone, then a relay under a fragment storm), the tombstones, and
key-request reflection.

The relay runs on the harness (``relay_harness``), with the mock clock: the storm's
deadlines and the reflection's token buckets are met at exact moments.
"""

import math
import random
from collections import Counter

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.legacy.events import ServerKey
from mcrelay.protocol.legacy.fragments import FRAGMENT_HEADER, Fragment, encode_fragment
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
from mcrelay.protocol.reassembly import (
    FRAGMENT_OVERHEAD_BYTES,
    MAX_TOMBSTONES,
    MESSAGE_OVERHEAD_BYTES,
    Complete,
    MessageKey,
    Outcome,
    Pending,
    Reassembler,
    Rejected,
)
from mcrelay.settings.config import RelayConfig
from relay_harness import client_address, harness_config, open_relay, settle
from support import legacy_of

Keys = list[rsa.RSAPrivateKey]
SEED = 20250611
STORM_CAP = 65536
"""The smallest ``max_reassembly_bytes`` a configuration may have."""
REASSEMBLY_TIMEOUT_S = 0.2


class Charges:
    """What a reassembler should hold and charge, kept from its outcomes alone: each
    message it holds, and the bytes charged for it (256 + piece + 64 per fragment)."""

    def __init__(self) -> None:
        self.held: dict[MessageKey, int] = {}

    def expired(self, keys: list[MessageKey]) -> None:
        for key in keys:
            del self.held[key]

    def added(self, source: Address, fragment: Fragment, outcome: Outcome) -> None:
        for key, _ in outcome.dropped:
            del self.held[key]
        key = (source, fragment.msg_id)
        if isinstance(outcome, Pending):
            cost = len(fragment.piece) + FRAGMENT_OVERHEAD_BYTES
            if outcome.new:
                cost += MESSAGE_OVERHEAD_BYTES
            self.held[key] = self.held.get(key, 0) + cost
        elif isinstance(outcome, Complete) or (isinstance(outcome, Rejected) and outcome.ended):
            self.held.pop(key, None)

    def check(self, reassembler: Reassembler) -> None:
        assert reassembler.buffered_bytes == sum(self.held.values())
        assert reassembler.in_flight == len(self.held)
        per_source: Counter[Address] = Counter()
        for (source, _), charged in self.held.items():
            per_source[source] += charged
        assert reassembler.bytes_per_source() == dict(per_source)


def test_reassembler_never_holds_more_than_its_byte_cap() -> None:
    rng = random.Random(SEED)
    # At 4 KiB a message, the cap holds about 15 messages: two per source makes both
    # bounds bite.
    reassembler = Reassembler(
        timeout_s=0.5, max_fragments=176, max_messages_per_source=2, max_total_bytes=STORM_CAP
    )
    charges = Charges()
    sources: list[Address] = [(f"10.0.{n // 250}.{n % 250 + 1}", 1000 + n) for n in range(64)]
    totals = {msg: rng.choice([2, 3, 7, 176]) for msg in range(32)}
    outcomes: Counter[str] = Counter()
    now, peak = 0.0, 0
    for step in range(30_000):
        now += rng.random() * 0.0005  # 7.5 s in all: messages time out as the storm goes on
        timed_out = reassembler.expire(now)
        charges.expired(timed_out)
        outcomes["timed out"] += len(timed_out)
        msg = rng.randrange(32)
        fragment = Fragment(
            msg.to_bytes(4, "big"),
            rng.randrange(totals[msg]),
            totals[msg],
            rng.randbytes(rng.choice([0, 1, 100, 256])),
        )
        source = rng.choice(sources)
        outcome = reassembler.add(source, fragment, now)
        charges.added(source, fragment, outcome)
        outcomes["evicted"] += sum(r is DropReason.REASSEMBLY_EVICTED for _, r in outcome.dropped)
        outcomes[
            outcome.reason.value if isinstance(outcome, Rejected) else type(outcome).__name__
        ] += 1
        assert reassembler.buffered_bytes <= STORM_CAP
        peak = max(peak, reassembler.buffered_bytes)
        if step % 97 == 0:
            charges.check(reassembler)
            held = Counter(source for source, _ in charges.held)
            assert max(held.values(), default=0) <= 2
    charges.check(reassembler)
    assert outcomes["evicted"] > 0
    assert outcomes["source_limit"] > 0
    assert outcomes["Complete"] > 0
    # At this rate the cap makes room (evicting) long before deadlines pass.
    assert outcomes["evicted"] > outcomes["timed out"]
    assert peak > STORM_CAP - (MESSAGE_OVERHEAD_BYTES + 2 * (256 + FRAGMENT_OVERHEAD_BYTES))
    reassembler.expire(math.inf)
    assert reassembler.buffered_bytes == 0
    assert reassembler.in_flight == 0
    assert reassembler.bytes_per_source() == {}


async def test_fragment_storm_from_many_sources_stays_under_the_byte_cap(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(SEED)
    async with open_relay(
        keys[0], max_reassembly_bytes=STORM_CAP, reassembly_timeout_s=REASSEMBLY_TIMEOUT_S
    ) as harness:
        relay = harness.relay
        cap = relay.config.max_reassembly_bytes
        a, b = harness.peer(client_address(1), keys[1]), harness.peer(client_address(2), keys[2])
        peers = [harness.peer(client_address(10 + n), keys[4]) for n in range(12)]
        for peer in [a, b, *peers]:
            peer.register()
        await settle()
        peak = 0
        # 12 sources x 16 messages of the largest size (176 fragments), 8 fragments each:
        # 8 messages per source could hold 8 x 2816 bytes, 12 sources 270 KB; the cap is 64 KiB.
        for seq in range(8):
            for peer in peers:
                for msg in range(16):
                    peer.send(
                        encode_fragment(
                            Fragment(msg.to_bytes(4, "big"), seq, 176, rng.randbytes(256))
                        )
                    )
                    held = relay.statistics().reassembly_bytes
                    assert held <= cap
                    assert sum(legacy_of(relay).reassembler.bytes_per_source().values()) == held
                    peak = max(peak, held)
            await trio.sleep(0.01)
        assert peak > cap - 2 * (256 + FRAGMENT_OVERHEAD_BYTES)
        evicted = harness.dropped("reassembly_evicted")
        assert evicted > 0
        assert harness.dropped("source_limit") > 0
        # What was held and not evicted lets go at its deadline, and no more.
        still_held = relay.statistics().reassembly_in_flight
        assert harness.dropped("reassembly_timeout") == 0
        await trio.sleep(REASSEMBLY_TIMEOUT_S)
        await settle()
        statistics = relay.statistics()
        assert (statistics.reassembly_in_flight, statistics.reassembly_bytes) == (0, 0)
        assert harness.dropped("reassembly_timeout") == still_held
        print(
            f"storm: peak {peak} of {cap} bytes, {still_held + evicted} messages held, "
            f"reassembly_evicted={evicted}, source_limit={harness.dropped('source_limit')}"
        )
        # The relay serves again.
        b.take()
        a.say(b"after the storm")
        await settle()
        assert b.messages() == [MessageReceived(a.address, b"after the storm")]


# Reflection: key requests (type 7) from many source ports.

REQUEST_SOURCES = 200
REQUESTS_PER_SOURCE = 10
REFLECTION = {
    "key_answers_per_source_burst": 3,
    "key_answers_per_source_per_s": 1.0,
    "key_answers_total_burst": 100,
    "key_answers_total_per_s": 50.0,
}
PACE_S = 0.005
"""Between half-waves of requests in the paced burst."""


async def test_a_members_flood_of_ended_keys_leaves_anothers_tombstones(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """13 datagrams of 5,458 invalid first fragments (total 0) each leave a tombstone:
    they flushed the 65,536 kept, oldest first, and a network duplicate of another
    member's message, a second after it completed, was delivered twice (found by
    review). The flooding member now forgets its own."""
    async with open_relay(keys[0]) as harness:
        watcher, sender, flooder = await harness.members(keys, 3)
        datagrams = sender.message(b"hello")
        sender.send(*datagrams)
        await settle()
        assert watcher.messages() == [MessageReceived(sender.address, b"hello")]
        await trio.sleep(1.0)
        per_datagram = legacy.MAX_UDP_PAYLOAD // (4 + FRAGMENT_HEADER.size)
        for d in range(MAX_TOMBSTONES // per_datagram + 1):
            flooder.send(
                b"".join(
                    encode_tlv(TlvType.FRAGMENT, FRAGMENT_HEADER.pack(msg_id.to_bytes(4), 0, 0))
                    for msg_id in range(d * per_datagram, (d + 1) * per_datagram)
                )
            )
        await settle()
        assert harness.dropped("invalid_fragment") > MAX_TOMBSTONES
        sender.send(*datagrams)  # the network duplicates both
        await settle()
        assert watcher.messages() == []
        assert harness.dropped("late_fragment") == 2


def answer_bound(config: RelayConfig, sources: int, elapsed_s: float) -> float:
    """Most answers the limits allow to ``sources`` sources within ``elapsed_s`` seconds.

    Each source has a bucket of B_s tokens refilled at r_s per second, and all share a
    bucket of B_t refilled at r_t; an answer takes a token from both. So over T seconds
    the relay answers at most min(B_t + r_t T, N (B_s + r_s T)). With R requests of
    S_req bytes each and answers of S_ans bytes, the amplification (bytes out over
    bytes in) is at most min(R, that) x S_ans / (R x S_req): it falls as the flood
    grows, and in the long run the relay sends at most r_t x S_ans bytes a second,
    whatever comes in.
    """
    per_source = (
        config.key_answers_per_source_burst + config.key_answers_per_source_per_s * elapsed_s
    )
    total = config.key_answers_total_burst + config.key_answers_total_per_s * elapsed_s
    return min(total, sources * per_source)


async def test_key_request_flood_is_answered_at_the_configured_rate(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    config = harness_config(**REFLECTION)
    request = legacy.key_request()
    answer = legacy.server_key(keys[0].public_key())
    sources = [client_address(n) for n in range(REQUEST_SOURCES)]
    requests = REQUEST_SOURCES * REQUESTS_PER_SOURCE
    async with open_relay(keys[0], config) as harness:
        relay = harness.relay
        peers = [harness.peer(source, keys[1]) for source in sources]

        async def answered() -> tuple[Counter[Address], int]:
            """Once every answer went out: how many each source got since the last call,
            and their bytes."""
            await settle()
            got: Counter[Address] = Counter()
            for peer in peers:
                events = peer.take_raw()
                assert events == [ServerKey(answer[4:])] * len(events)
                got[peer.address] += len(events)
            return got, got.total() * len(answer)

        # A burst of 2,000 requests from 200 ports, paced in half-waves.
        start = trio.current_time()
        for _ in range(REQUESTS_PER_SOURCE):
            for half in (peers[: REQUEST_SOURCES // 2], peers[REQUEST_SOURCES // 2 :]):
                for peer in half:
                    peer.send(request)
                elapsed = trio.current_time() - start  # every request was handled by now
                await trio.sleep(PACE_S)
        got, bytes_out = await answered()
        count = got.total()
        assert relay.counters.datagrams_in == requests
        assert count + harness.dropped("rate_limited") == requests
        # The first hundred requests come from a hundred fresh sources: all answered.
        assert count >= config.key_answers_total_burst
        assert count <= answer_bound(config, REQUEST_SOURCES, elapsed)
        per_source = (
            config.key_answers_per_source_burst + config.key_answers_per_source_per_s * elapsed
        )
        assert max(got.values()) <= per_source
        assert bytes_out == relay.counters.bytes_out == count * len(answer)
        amplification = bytes_out / (requests * len(request))
        bound = (
            answer_bound(config, REQUEST_SOURCES, elapsed) * len(answer) / (requests * len(request))
        )
        assert amplification <= bound
        print(
            f"reflection: {requests} requests in {elapsed:.3f} s, {count} answered, "
            f"{bytes_out} bytes out for {requests * len(request)} in: x{amplification:.2f} "
            f"(bound x{bound:.2f})"
        )

        # Two waves one second apart, long after: every bucket full again, long forgotten.
        for wait_s in (1000.0, 1.0):
            await trio.sleep(wait_s)
            for _ in range(REQUESTS_PER_SOURCE):
                for peer in peers:
                    peer.send(request)
        got, bytes_out = await answered()
        # Wave 1: the total burst (100; the per-source bursts would allow 600). Wave 2,
        # one second on: the total refill (50), each source having refilled one token.
        assert got.total() == answer_bound(config, REQUEST_SOURCES, 1.0) == 150
        assert max(got.values()) <= config.key_answers_per_source_burst + 1
        assert bytes_out == 150 * len(answer)  # x4.27 the 16,000 bytes asked with
