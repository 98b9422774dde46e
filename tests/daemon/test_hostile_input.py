"""Hostile input: a garbage flood beside real chat, the reassembly byte cap, and
key-request reflection. (The fuzz target for the same handler is ``fuzz/fuzz_datagram.py``;
what it found would become a regression test here, see ``fuzz/README.md``.)

The flood feeds most of its datagrams straight into ``Relay.handle_datagram`` (the
relay's entry point for a received datagram) from fake sources, and sends the rest
over loopback, while three real participants chat through real sockets. The fate of
every datagram is predicted: the wire decoder says which datagram-level drops it
causes, a shadow :class:`Reassembler` fed the same fragments at the same ``now`` says
what reassembly does with them, and the relay's own key says how each completed
payload ends. So the drop counters are checked exactly, reason by reason.

Nothing is ever sent to a fake source: they send no key requests and no key the relay
would accept, so the relay has no reason to answer them.
"""

import math
import random
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mcrelay.client import MessageReceived, Participant, PeerPresent
from mcrelay.daemon.relay import Relay
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import (
    ClientKey,
    DisconnectRequest,
    FragmentReceived,
    Ignored,
    Keepalive,
    KeyRequest,
    PeerJoined,
    ServerKey,
)
from mcrelay.protocol.legacy.fragments import (
    FRAGMENT_HEADER,
    Fragment,
    encode_fragment,
    split_payload,
)
from mcrelay.protocol.legacy.tlv import TLV_HEADER, TlvType
from mcrelay.protocol.reassembly import (
    FRAGMENT_OVERHEAD_BYTES,
    MESSAGE_OVERHEAD_BYTES,
    Complete,
    Pending,
    Reassembler,
    Rejected,
)
from mcrelay.settings.config import RelayConfig
from mcrelay.sockets import open_client_socket
from support import (
    GROUP,
    LOOPBACK,
    RawPeer,
    dropped,
    join,
    next_event,
    raw_peer,
    relay_config,
    running_relay,
    settled,
    wait_until,
)

Keys = list[rsa.RSAPrivateKey]
SEED = 20250611

FLOOD_DATAGRAMS = 50_000
FLOOD_HOSTILE = 15_000
"""Of the flood, fed from the registered hostile sources (fragments, mostly)."""
PROFILES = ("storm", "mixed", "messages")
"""One registered hostile source for each (see :meth:`Garbage.hostile_stream`)."""
FLOOD_RAW_PER_SOCKET = 750
"""Of the flood, sent for real over loopback by each of four raw sockets."""
FLOOD_RAW_KEY_REQUESTS = 4
"""Plain key requests per unregistered raw socket: under the per-source burst, all answered."""
FLOOD_BATCH = 250
CHAT_ROUNDS = 5
FLOOD_MAX_MESSAGE_BYTES = 1000
"""Six 2048-bit blocks, seven fragments: small enough that every size bound is cheap to hit."""
REASSEMBLY_TIMEOUT_S = 0.2
COMPLETIONS_BETWEEN_FLUSHES = 24
"""Messages one hostile completes before the flood waits for the crypto stage to drain,
so that none is refused as ``overloaded`` (32 per client) and the accounting stays exact."""


# The oracle: what the relay does with a datagram.


def drops(relay: Relay) -> Counter[DropReason]:
    return Counter(relay.counters.dropped)


def datagram_outcome(
    data: bytes, *, registered: bool
) -> tuple[Counter[DropReason], list[Fragment]] | None:
    """The drops a datagram causes before reassembly, and the fragments it hands over.

    ``None`` for a datagram that would earn an answer or change the roster (a key
    request, a key the relay accepts, a registered source's DISCONNECT): the flood
    leaves those out, so that nothing is sent to a fake source and the roster holds.
    """
    try:
        events = legacy.decode_client_datagram_untrusted(data)
    except RemoteProtocolError as exc:
        return Counter({exc.reason: 1}), []
    counted: Counter[DropReason] = Counter()
    fragments: list[Fragment] = []
    for event in events:
        if isinstance(event, KeyRequest):
            return None
        if isinstance(event, ClientKey):
            try:
                crypto.load_public_key_untrusted(event.pem)
            except RemoteProtocolError as exc:
                counted[exc.reason] += 1
            else:
                return None
        elif isinstance(event, FragmentReceived):
            if registered:
                fragments.append(event.fragment)
            else:
                counted[DropReason.UNREGISTERED] += 1
        elif isinstance(event, DisconnectRequest):
            if registered:
                return None
            counted[DropReason.UNREGISTERED] += 1
        elif isinstance(event, Keepalive):
            if not registered:
                counted[DropReason.UNREGISTERED] += 1
        else:
            assert isinstance(event, Ignored)
            counted[DropReason.UNKNOWN_TYPE] += 1
    return counted, fragments


class Shadow:
    """Reassembly and decryption as the relay does them, for the hostile sources.

    The relay expires its reassembler at ``now`` before every fragment it adds, and
    its tasks expire it at deadlines that are never later than the next fragment's
    ``now``; so a shadow fed the same fragments at the same ``now`` sees the same
    state at each add (the global byte cap, which other sources share, is far away).
    """

    def __init__(self, config: RelayConfig, relay_key: rsa.RSAPrivateKey) -> None:
        self.config = config
        self.relay_key = relay_key
        self.reassembler = Reassembler(
            timeout_s=config.reassembly_timeout_s,
            max_fragments=legacy.max_fragments(relay_key.public_key(), config.max_message_bytes),
            max_messages_per_source=config.max_messages_per_source,
            max_total_bytes=config.max_reassembly_bytes,
        )
        self.drops: Counter[DropReason] = Counter()
        self.deliveries: Counter[tuple[Address, bytes]] = Counter()
        self._payloads: dict[bytes, DropReason | bytes] = {}

    def fragment(self, source: Address, fragment: Fragment, now: float) -> bool:
        """Add one fragment; true when it completed a message."""
        self.drops[DropReason.REASSEMBLY_TIMEOUT] += len(self.reassembler.expire(now))
        outcome = self.reassembler.add(source, fragment, now)
        for _, reason in outcome.dropped:
            self.drops[reason] += 1
        if isinstance(outcome, Rejected):
            self.drops[outcome.reason] += 1
        elif isinstance(outcome, Complete):
            self._complete(source, outcome.payload)
            return True
        return False

    def _complete(self, source: Address, payload: bytes) -> None:
        if payload not in self._payloads:
            try:
                self._payloads[payload] = legacy.decrypt_payload_untrusted(
                    self.relay_key, payload, self.config.max_message_bytes
                )
            except RemoteProtocolError as exc:
                self._payloads[payload] = exc.reason
        result = self._payloads[payload]
        if isinstance(result, DropReason):
            self.drops[result] += 1
        elif len(result) > self.config.max_message_bytes:
            self.drops[DropReason.TOO_LARGE] += 1
        elif result != legacy.CONNECT_WORD:
            assert result != legacy.DISCONNECT_WORD, "the flood never disconnects its hostiles"
            self.deliveries[(source, result)] += 1

    def finish(self) -> None:
        """Everything still held times out."""
        self.drops[DropReason.REASSEMBLY_TIMEOUT] += len(self.reassembler.expire(math.inf))


# Deterministic garbage.


def tlv(type_: int, value: bytes) -> bytes:
    """A TLV, without the encoder's checks."""
    return TLV_HEADER.pack(type_, len(value)) + value


def fragment_tlv(msg_id: bytes, seq: int, total: int, piece: bytes) -> bytes:
    return tlv(TlvType.FRAGMENT, FRAGMENT_HEADER.pack(msg_id, seq, total) + piece)


def rsa_pem(e: int, n: int) -> bytes:
    return crypto.public_key_to_pem(rsa.RSAPublicNumbers(e, n).public_key())


def bad_pems(rng: random.Random, good: bytes) -> list[bytes]:
    """Keys the relay must refuse: wrong types, sizes and exponents, and broken PEM."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM

    def odd(bits: int) -> int:
        return rng.getrandbits(bits) | (1 << (bits - 1)) | 1

    return [
        ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(pem, spki),
        ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(pem, spki),
        rsa_pem(65537, odd(1024)),  # too small
        rsa_pem(65537, odd(4104)),  # too large
        rsa_pem(3, odd(2048)),  # wrong exponent
        rsa_pem((1 << 100) + 1, odd(2048)),  # huge exponent
        good[:-60] + b"-----END PUBLIC KEY-----\n",  # truncated
        good.replace(b"PUBLIC KEY", b"PRIVATE KEY"),
        b"-----BEGIN PUBLIC KEY-----\n" + b"QUFB" * 1100 + b"\n-----END PUBLIC KEY-----\n",
        b"",
        b"abc",
    ]


class Garbage:
    """Hostile datagrams from ``random.Random(seed)`` (and the session's keys, which vary)."""

    def __init__(
        self, rng: random.Random, relay_public: rsa.RSAPublicKey, member: rsa.RSAPublicKey
    ):
        self.rng = rng
        self.relay_public = relay_public
        good = crypto.public_key_to_pem(member)
        self.pems = bad_pems(rng, good)
        self.real = [
            *legacy.message_datagrams(relay_public, b"a real message " * 30, b"\x01\x02\x03\x04"),
            legacy.keepalive() + legacy.client_key(member),
            legacy.client_key(member),
            legacy.disconnect(),
            legacy.peer_joined(("127.0.0.1", 40000)),
        ]

    def choose(self, makers: list[tuple[int, Callable[[], bytes]]]) -> bytes:
        weights = [weight for weight, _ in makers]
        make: Callable[[], bytes] = self.rng.choices([m for _, m in makers], weights)[0]
        return make()

    # One TLV or one datagram, for any source.

    def any_tlv(self) -> bytes:
        rng = self.rng
        return self.choose(
            [
                (
                    3,
                    lambda: tlv(
                        rng.choice([3, 5, 6, 10, 11, 12]), rng.randbytes(rng.randrange(300))
                    ),
                ),
                (
                    3,
                    lambda: tlv(
                        rng.choice([0, 2, 13, 99, 0x7FFF, 0xFFFF]), rng.randbytes(rng.randrange(64))
                    ),
                ),
                (2, lambda: tlv(rng.randrange(13, 0x10000), rng.randbytes(rng.randrange(16)))),
                (
                    2,
                    lambda: tlv(
                        rng.choice([10, 11, 12]),
                        rng.randbytes(rng.choice([0, 1, 5, 7, 17, 19, 40])),
                    ),
                ),
                (2, lambda: tlv(TlvType.CLIENT_PUBLIC_KEY, rng.choice(self.pems))),
                (1, lambda: tlv(TlvType.KEEPALIVE, rng.randbytes(rng.randrange(3)))),
                (1, lambda: tlv(TlvType.DISCONNECT, b"")),
                (4, self.storm_fragment),
            ]
        )

    def storm_fragment(self) -> bytes:
        rng = self.rng
        return fragment_tlv(
            rng.randbytes(4),
            rng.randrange(0x10000),
            rng.randrange(0x10000),
            rng.randbytes(rng.randrange(300)),
        )

    def tlv_run(self) -> bytes:
        return b"".join(self.any_tlv() for _ in range(self.rng.randint(1, 4)))

    def mutated(self) -> bytes:
        rng = self.rng
        data = bytearray(rng.choice(self.real))
        for _ in range(rng.randint(1, 4)):
            where = rng.randrange(len(data) + 1)
            match rng.randrange(6):  # flip a bit, insert, delete, cut, bad length, append
                case 0 if data:
                    data[min(where, len(data) - 1)] ^= 1 << rng.randrange(8)
                case 1:
                    data[where:where] = rng.randbytes(rng.randint(1, 8))
                case 2:
                    del data[where : where + rng.randint(1, 16)]
                case 3:
                    del data[where:]
                case 4 if len(data) >= 4:
                    data[2:4] = rng.randrange(0x10000).to_bytes(2, "big")
                case _:
                    data += rng.randbytes(rng.randint(1, 32))
        return bytes(data)

    def datagram(self) -> bytes:
        """Any datagram, from any source; the oracle sorts out what it does."""
        rng = self.rng
        return self.choose(
            [
                (3, lambda: rng.randbytes(rng.randrange(600))),
                (3, lambda: (run := self.tlv_run())[: rng.randrange(len(run))]),  # truncated
                (
                    2,  # impossible length, after good TLVs
                    lambda: (
                        self.tlv_run()
                        + TLV_HEADER.pack(rng.randrange(0x10000), rng.randrange(65, 0x10000))
                        + rng.randbytes(rng.randrange(64))
                    ),
                ),
                (6, self.tlv_run),
                (2, lambda: tlv(TlvType.FRAGMENT, rng.randbytes(rng.randrange(8)))),  # short header
                (6, self.mutated),
                (4, self.storm_fragment),
            ]
        )

    def acceptable(
        self, *, registered: bool, fragments: bool
    ) -> tuple[bytes, Counter[DropReason], list[Fragment]]:
        """A datagram whose whole effect the oracle can tell (see :func:`datagram_outcome`)."""
        for _ in range(1000):
            data = self.datagram()
            outcome = datagram_outcome(data, registered=registered)
            if outcome is not None and (fragments or not outcome[1]):
                return data, outcome[0], outcome[1]
        raise AssertionError("the generator keeps making datagrams the flood must leave out")

    # Messages from a registered hostile source: lists of datagrams.

    def msg_id(self) -> bytes:
        return self.rng.randbytes(4)

    def payload(self, payload: bytes) -> list[bytes]:
        return [encode_fragment(f) for f in split_payload(payload, self.msg_id())]

    def valid(self) -> list[bytes]:
        """A message in shuffled order with repeats (duplicates), then replayed whole (late)."""
        rng = self.rng
        text = f"hostile but valid {rng.randrange(10**9)} ".encode() * rng.randint(1, 20)
        datagrams = legacy.message_datagrams(self.relay_public, text, self.msg_id())
        copies = datagrams + rng.sample(datagrams, k=rng.randint(1, len(datagrams)))
        rng.shuffle(copies)
        return copies + datagrams

    def bad_ciphertext(self) -> list[bytes]:
        blocks = self.rng.randint(1, 3)
        return self.payload(
            b"".join(tlv(TlvType.ENCRYPTED_BLOCK, self.rng.randbytes(256)) for _ in range(blocks))
        )

    def flipped(self) -> list[bytes]:
        block = crypto.encrypt_blocks(self.relay_public, b"flipped")[0]
        spoiled = bytearray(block)
        spoiled[self.rng.randrange(len(spoiled))] ^= 0x80
        return self.payload(tlv(TlvType.ENCRYPTED_BLOCK, bytes(spoiled)))

    def too_large_plaintext(self) -> list[bytes]:
        """Six full blocks: within the block limit, 140 bytes over the cap once decrypted."""
        return legacy.message_datagrams(
            self.relay_public, self.rng.randbytes(6 * 190), self.msg_id()
        )

    def connect_word(self) -> list[bytes]:
        return legacy.message_datagrams(self.relay_public, legacy.CONNECT_WORD, self.msg_id())

    def one_fragment_payload(self) -> list[bytes]:
        """A message of one fragment (total 1) whose payload is anything but good blocks."""
        rng = self.rng
        block = TlvType.ENCRYPTED_BLOCK

        def short_block() -> bytes:
            return tlv(block, rng.randbytes(rng.randrange(253)))

        def other_type() -> bytes:
            return tlv(rng.choice([1, 4, 5, 7, 9, 0xFFFF]), rng.randbytes(rng.randrange(100)))

        def cut_framing() -> bytes:
            return tlv(block, b"") + rng.randbytes(rng.randint(1, 3))

        def mixed() -> bytes:
            return tlv(block, b"") + tlv(TlvType.KEEPALIVE, b"")

        def too_many_blocks() -> bytes:
            return tlv(block, b"") * rng.randint(7, 64)

        payload = self.choose(
            [
                (3, short_block),
                (2, lambda: b""),
                (3, other_type),
                (2, cut_framing),
                (2, mixed),
                (3, too_many_blocks),
            ]
        )
        datagram = fragment_tlv(self.msg_id(), 0, 1, payload)
        return [datagram, datagram] if rng.random() < 0.3 else [datagram]  # the copy comes late

    def invalid_numbers(self) -> list[bytes]:
        """A first fragment with a total of 0, a seq past its total, a total past the
        largest message's (a huge one too), or a piece over 256 bytes."""
        rng = self.rng
        msg_id, piece = self.msg_id(), rng.randbytes(rng.randrange(257))
        return [
            self.choose(
                [
                    (1, lambda: fragment_tlv(msg_id, 0, 0, piece)),
                    (1, lambda: fragment_tlv(msg_id, rng.randint(3, 0xFFFF), 3, piece)),
                    (1, lambda: fragment_tlv(msg_id, 0, rng.choice([8, 176, 0xFFFF]), piece)),
                    (1, lambda: fragment_tlv(msg_id, 0, 3, rng.randbytes(rng.randint(257, 400)))),
                ]
            )
        ]

    def conflicting(self) -> list[bytes]:
        msg_id, total = self.msg_id(), self.rng.randint(3, 7)
        first = fragment_tlv(msg_id, 0, total, b"first")
        if self.rng.random() < 0.5:
            return [first, fragment_tlv(msg_id, 1, total + 1, b"second")]  # another total
        return [first, fragment_tlv(msg_id, 0, total, b"other")]  # other bytes, same seq

    def duplicates(self) -> list[bytes]:
        msg_id, total = self.msg_id(), self.rng.randint(3, 7)
        first, second = (
            fragment_tlv(msg_id, 0, total, b"one"),
            fragment_tlv(msg_id, 1, total, b"two"),
        )
        return [first, first, second, second, first]

    def storm(self) -> list[bytes]:
        """First fragments of many messages: past the per-source limit, then timed out."""
        rng = self.rng
        return [
            fragment_tlv(self.msg_id(), 0, rng.randint(2, 7), rng.randbytes(rng.randrange(257)))
            for _ in range(rng.randint(10, 40))
        ]

    def packed(self) -> list[bytes]:
        """Two fragments in one datagram."""
        msg_id = self.msg_id()
        return [fragment_tlv(msg_id, 1, 2, b"\x00") + fragment_tlv(msg_id, 0, 2, b"\x00\x03\x00")]

    def junk(self) -> list[bytes]:
        return [self.acceptable(registered=True, fragments=False)[0]]

    def hostile_stream(self, count: int, profile: str) -> list[bytes]:
        """``count`` datagrams of one registered hostile, its messages interleaved.

        ``storm`` keeps its source at the per-source limit; ``mixed`` sends a bit of
        everything; ``messages`` sends whole messages (valid ones, bad ciphertexts,
        bad payloads) and replays, so that they complete and their copies come late.
        """
        rng = self.rng
        sequences: list[list[bytes]] = []
        if profile == "messages":
            sequences += [self.valid() for _ in range(10)] + [self.too_large_plaintext()]
            sequences += [self.bad_ciphertext() for _ in range(25)]
            sequences += [self.flipped() for _ in range(10)] + [self.connect_word()]
        weights = {
            "storm": [0, 4, 2, 0, 4, 1, 3],
            "mixed": [6, 6, 3, 3, 1, 1, 6],
            "messages": [8, 0, 0, 0, 0, 1, 2],
        }[profile]
        makers = [
            self.one_fragment_payload,
            self.invalid_numbers,
            self.conflicting,
            self.duplicates,
            self.storm,
            self.packed,
            self.junk,
        ]
        size = sum(map(len, sequences))
        while size < count:
            sequences.append(rng.choices(makers, weights)[0]())
            size += len(sequences[-1])
        rng.shuffle(sequences)
        stream: list[bytes] = []
        open_: list[list[bytes]] = []
        while sequences or open_:
            while len(open_) < 3 and sequences:
                open_.append(sequences.pop())
            current = rng.randrange(len(open_))
            stream.append(open_[current].pop(0))
            if not open_[current]:
                del open_[current]
        return stream[:count]


def pending_relays(relay: Relay) -> int:
    pending = relay.statistics().pending_relays
    assert isinstance(pending, int)
    return pending


def running_tasks() -> int:
    """Every task in this Trio run."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, nurseries = 0, list(root.child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            count += 1
            nurseries.extend(task.child_nurseries)
    return count


def consumed(relay: Relay, datagrams: int) -> Callable[[], bool]:
    return lambda: relay.counters.datagrams_in >= datagrams


def at_least(items: list[MessageReceived], count: int) -> Callable[[], bool]:
    return lambda: len(items) >= count


async def soon(condition: Callable[[], bool]) -> None:
    """``wait_until``, but first a few scheduler rounds: the relay reads one datagram a round."""
    for _ in range(64):
        if condition():
            return
        await trio.lowlevel.checkpoint()
    await wait_until(condition)


async def collect(participant: Participant, into: list[MessageReceived]) -> None:
    async for event in participant.events:
        if isinstance(event, MessageReceived):
            into.append(event)


async def test_garbage_flood_while_three_clients_chat(relay_key_file: Path, keys: Keys) -> None:
    config = relay_config(
        relay_key_file,
        reassembly_timeout_s=REASSEMBLY_TIMEOUT_S,
        max_message_bytes=FLOOD_MAX_MESSAGE_BYTES,
    )
    relay_public = keys[0].public_key()
    rng = random.Random(SEED)
    garbage = Garbage(rng, relay_public, keys[4].public_key())
    shadow = Shadow(config, keys[0])
    expected: Counter[DropReason] = Counter()

    async with running_relay(config) as relay, AsyncExitStack() as stack:
        chatters = [
            await stack.enter_async_context(join(relay, key, keepalive_interval_s=60.0))
            for key in keys[1:4]
        ]
        hostiles = [await stack.enter_async_context(raw_peer(relay, keys[4])) for _ in PROFILES]
        strangers = [await stack.enter_async_context(raw_peer(relay, keys[4])) for _ in range(3)]
        for hostile in hostiles:
            await hostile.register()
        await wait_until(lambda: len(relay.roster) == 3 + len(PROFILES) and settled(relay))
        real = {p.address for p in chatters} | {r.address for r in hostiles + strangers}

        # The flood, generated up front: (kind, datagram, who).
        share = FLOOD_HOSTILE // len(PROFILES)
        streams = [iter(garbage.hostile_stream(share, profile)) for profile in PROFILES]
        hostile_order = [i for i in range(len(PROFILES)) for _ in range(share)]
        rng.shuffle(hostile_order)  # the hostiles interleave; each keeps its own order
        hostile_feed = [(i, next(streams[i])) for i in hostile_order]
        raw_feed: list[tuple[RawPeer, bytes]] = []
        for stranger in strangers:
            raw_feed += [(stranger, legacy.key_request())] * FLOOD_RAW_KEY_REQUESTS
            for _ in range(FLOOD_RAW_PER_SOCKET - FLOOD_RAW_KEY_REQUESTS):
                data, counted, _ = garbage.acceptable(registered=False, fragments=True)
                raw_feed.append((stranger, data))
                expected += counted
        for _ in range(FLOOD_RAW_PER_SOCKET):  # datagram-level junk from a registered socket
            data, counted, _ = garbage.acceptable(registered=True, fragments=False)
            raw_feed.append((hostiles[0], data))
            expected += counted
        rng.shuffle(raw_feed)
        fake_feed: list[tuple[Address, bytes]] = []
        for _ in range(FLOOD_DATAGRAMS - len(hostile_feed) - len(raw_feed)):
            source = ("127.0.0.1", rng.randrange(1024, 32768))
            if source in real:
                source = ("127.0.0.1", 1023)
            data, counted, _ = garbage.acceptable(registered=False, fragments=True)
            fake_feed.append((source, data))
            expected += counted
        kinds = (
            ["fake"] * len(fake_feed) + ["hostile"] * len(hostile_feed) + ["raw"] * len(raw_feed)
        )
        assert len(kinds) == FLOOD_DATAGRAMS
        rng.shuffle(kinds)
        batches = [kinds[i : i + FLOOD_BATCH] for i in range(0, len(kinds), FLOOD_BATCH)]
        texts = [
            (n % 3, f"{n}: real chat from {n % 3} é ✓ ".encode() + b"z" * (n * 60))
            for n in range(3 * CHAT_ROUNDS)
        ]
        chat_at = {len(batches) * n // len(texts): n for n in range(len(texts))}

        received: list[list[MessageReceived]] = [[] for _ in chatters]
        before = drops(relay)
        baseline_tasks = running_tasks()
        expected_in = relay.counters.datagrams_in
        hostile_addresses = [hostile.address for hostile in hostiles]
        completions = [0] * len(hostiles)
        async with trio.open_nursery() as listeners:
            for participant, into in zip(chatters, received, strict=True):
                listeners.start_soon(collect, participant, into)
            fakes, hostile_items, raws = iter(fake_feed), iter(hostile_feed), iter(raw_feed)
            for number, batch in enumerate(batches):
                for kind in batch:
                    if kind == "fake":
                        source, data = next(fakes)
                        relay.handle_datagram(data, source, trio.current_time())
                    elif kind == "hostile":
                        index, data = next(hostile_items)
                        source, now = hostile_addresses[index], trio.current_time()
                        relay.handle_datagram(data, source, now)
                        outcome = datagram_outcome(data, registered=True)
                        assert outcome is not None
                        expected += outcome[0]
                        for fragment in outcome[1]:
                            completions[index] += shadow.fragment(source, fragment, now)
                        if completions[index] >= COMPLETIONS_BETWEEN_FLUSHES:
                            await soon(lambda: pending_relays(relay) == 0)
                            completions = [0] * len(hostiles)
                    else:
                        peer, data = next(raws)
                        await peer.send(data)
                    expected_in += 1
                if number in chat_at:
                    sender, text = texts[chat_at[number]]
                    await chatters[sender].send(text)
                    expected_in += len(legacy.message_datagrams(relay_public, text, b"\x00" * 4))
                # Paced: the relay reads what went through the kernel before more is sent,
                # so no real datagram is lost in a receive buffer.
                await soon(consumed(relay, expected_in))

            # Every message in reassembly reaches its deadline; nothing stays in flight.
            shadow.finish()
            expected += shadow.drops
            await wait_until(lambda: relay.legacy.reassembler.in_flight == 0)
            await wait_until(lambda: settled(relay))

            # Every real message reached each other participant exactly once; so did
            # each valid hostile message (replays within the deadline were dropped).
            for me, into in enumerate(received):
                want: Counter[tuple[Address, bytes]] = Counter(
                    {(chatters[s].address, t): 1 for s, t in texts if s != me}
                )
                want += shadow.deliveries
                await wait_until(at_least(into, want.total()))
                got = Counter((m.sender, m.data) for m in into)
                assert got == want
            listeners.cancel_scope.cancel()

        # Each drop under its reason, and all of them accounted for.
        with trio.move_on_after(2.0):
            await wait_until(lambda: drops(relay) - before == expected)
        caused = drops(relay) - before
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
        assert relay.legacy.reassembler.in_flight == 0
        assert relay.legacy.reassembler.buffered_bytes == 0
        assert relay.statistics().pending_relays == 0
        assert running_tasks() == baseline_tasks
        assert {c.address for c in relay.roster} == {p.address for p in chatters} | {
            h.address for h in hostiles
        }
        print(
            f"flood: {FLOOD_DATAGRAMS} datagrams, {relay.counters.datagrams_in} in, "
            f"{relay.counters.messages_relayed} relayed ({shadow.deliveries.total()} hostile), "
            f"drops {', '.join(f'{r.value}={n}' for r, n in sorted(caused.items()))}"
        )


# Memory: the global reassembly byte cap.

STORM_CAP = 65536
"""The smallest ``max_reassembly_bytes`` a configuration may have."""


def charged(reassembler: Reassembler) -> int:
    """The bytes the reassembler should be charging for what it holds, recomputed."""
    return sum(
        MESSAGE_OVERHEAD_BYTES
        + sum(len(piece) + FRAGMENT_OVERHEAD_BYTES for piece in partial.pieces.values())
        for partial in reassembler._partials.values()
    )


def test_reassembler_never_holds_more_than_its_byte_cap() -> None:
    rng = random.Random(SEED)
    # At 4 KiB a message, the cap holds about 15 messages: two per source makes both
    # bounds bite.
    reassembler = Reassembler(
        timeout_s=0.5, max_fragments=176, max_messages_per_source=2, max_total_bytes=STORM_CAP
    )
    sources: list[Address] = [(f"10.0.{n // 250}.{n % 250 + 1}", 1000 + n) for n in range(64)]
    totals = {msg: rng.choice([2, 3, 7, 176]) for msg in range(32)}
    outcomes: Counter[str] = Counter()
    now, peak = 0.0, 0
    for step in range(30_000):
        now += rng.random() * 0.0005  # 7.5 s in all: messages time out as the storm goes on
        outcomes["timed out"] += len(reassembler.expire(now))
        msg = rng.randrange(32)
        fragment = Fragment(
            msg.to_bytes(4, "big"),
            rng.randrange(totals[msg]),
            totals[msg],
            rng.randbytes(rng.choice([0, 1, 100, 256])),
        )
        outcome = reassembler.add(rng.choice(sources), fragment, now)
        outcomes["evicted"] += sum(r is DropReason.REASSEMBLY_EVICTED for _, r in outcome.dropped)
        outcomes[
            outcome.reason.value if isinstance(outcome, Rejected) else type(outcome).__name__
        ] += 1
        assert reassembler.buffered_bytes <= STORM_CAP
        peak = max(peak, reassembler.buffered_bytes)
        if step % 97 == 0:
            assert reassembler.buffered_bytes == charged(reassembler)
            held = Counter(key[0] for key in reassembler._partials)
            assert max(held.values(), default=0) <= 2
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
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = relay_config(
        relay_key_file, max_reassembly_bytes=STORM_CAP, reassembly_timeout_s=REASSEMBLY_TIMEOUT_S
    )
    rng = random.Random(SEED)
    async with running_relay(config) as relay, AsyncExitStack() as stack:
        reassembler = relay.legacy.reassembler
        seen = {"peak": 0, "over": 0, "started": 0}
        add = reassembler.add

        def watched(
            source: Address, fragment: Fragment, now: float
        ) -> Pending | Complete | Rejected:
            # Every fragment the relay takes, fed here or received from a socket.
            outcome = add(source, fragment, now)
            seen["peak"] = max(seen["peak"], reassembler.buffered_bytes)
            seen["over"] += reassembler.buffered_bytes > config.max_reassembly_bytes
            seen["started"] += isinstance(outcome, Pending) and outcome.new
            return outcome

        monkeypatch.setattr(reassembler, "add", watched)
        a = await stack.enter_async_context(join(relay, keys[1], keepalive_interval_s=60.0))
        b = await stack.enter_async_context(join(relay, keys[2], keepalive_interval_s=60.0))
        peers = [await stack.enter_async_context(raw_peer(relay, keys[4])) for _ in range(12)]
        for peer in peers:
            await peer.register()
        addresses = [peer.address for peer in peers]
        storm_start = relay.counters.datagrams_in
        # 12 sources x 16 messages of the largest size (176 fragments), 8 fragments each:
        # 8 messages per source could hold 8 x 2816 bytes, 12 sources 270 KB; the cap is 64 KiB.
        for seq in range(8):
            for source, peer in zip(addresses, peers, strict=True):
                for msg in range(16):
                    fragment = Fragment(msg.to_bytes(4, "big"), seq, 176, rng.randbytes(256))
                    if seq == 7 and msg < 4:  # some through the kernel
                        await peer.send(encode_fragment(fragment))
                    else:
                        relay.handle_datagram(
                            encode_fragment(fragment), source, trio.current_time()
                        )
                    assert reassembler.buffered_bytes <= config.max_reassembly_bytes
                    assert reassembler.buffered_bytes == charged(reassembler)
                await trio.lowlevel.checkpoint()
        await wait_until(consumed(relay, storm_start + 12 * 16 * 8))
        assert seen["over"] == 0
        assert seen["peak"] <= config.max_reassembly_bytes
        assert seen["peak"] > config.max_reassembly_bytes - 2 * (256 + FRAGMENT_OVERHEAD_BYTES)
        evicted = dropped(relay, "reassembly_evicted")
        assert evicted > 0
        assert dropped(relay, "source_limit") > 0
        print(
            f"storm: peak {seen['peak']} of {config.max_reassembly_bytes} bytes, "
            f"{seen['started']} messages held, reassembly_evicted={evicted}, "
            f"source_limit={dropped(relay, 'source_limit')}"
        )
        # What was held and not evicted lets go at its deadline, and no more.
        await wait_until(lambda: reassembler.in_flight == 0)
        assert reassembler.buffered_bytes == 0
        await wait_until(lambda: dropped(relay, "reassembly_timeout") == seen["started"] - evicted)
        # The relay serves again.
        await a.send("after the storm")
        while (event := await next_event(b)) != MessageReceived(a.address, b"after the storm"):
            assert isinstance(event, PeerJoined | PeerPresent)


# Reflection: key requests (type 7) from many source ports.

REQUEST_SOURCES = 200
REQUESTS_PER_SOURCE = 10
REFLECTION = {
    "key_answers_per_source_burst": 3,
    "key_answers_per_source_per_s": 1.0,
    "key_answers_total_burst": 100,
    "key_answers_total_per_s": 50.0,
}


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
    relay_key_file: Path, keys: Keys
) -> None:
    config = relay_config(relay_key_file, **REFLECTION)
    request = legacy.key_request()
    answer = legacy.server_key(keys[0].public_key())
    async with running_relay(config) as relay, AsyncExitStack() as stack:
        socks = [
            stack.enter_context(await open_client_socket(interface=LOOPBACK))
            for _ in range(REQUEST_SOURCES)
        ]
        sources: list[Address] = [sock.getsockname()[:2] for sock in socks]
        answers = [0] * REQUEST_SOURCES
        answer_bytes = [0]

        async def listen(index: int, sock: trio.socket.SocketType) -> None:
            while True:
                data, _ = await sock.recvfrom(65535)
                assert legacy.decode_relay_datagram_untrusted(data) == [ServerKey(answer[4:])]
                answers[index] += 1
                answer_bytes[0] += len(data)

        async def answered_all(out0: int, bytes_out0: int) -> tuple[int, int]:
            """Once every answer went out and arrived: the answers and bytes the relay sent."""
            await wait_until(lambda: settled(relay))
            sent = relay.counters.datagrams_out - out0
            await wait_until(lambda: sum(answers) == sent)
            return sent, relay.counters.bytes_out - bytes_out0

        async with trio.open_nursery() as listeners:
            for index, sock in enumerate(socks):
                listeners.start_soon(listen, index, sock)

            # A real burst: 2,000 requests from 200 ports, through the kernel.
            in0, out0, bytes_out0 = (
                relay.counters.datagrams_in,
                relay.counters.datagrams_out,
                relay.counters.bytes_out,
            )
            limited0 = dropped(relay, "rate_limited")
            start = trio.current_time()
            sent = 0
            for _ in range(REQUESTS_PER_SOURCE):
                for half in (socks[: REQUEST_SOURCES // 2], socks[REQUEST_SOURCES // 2 :]):
                    for sock in half:
                        await sock.sendto(request, (GROUP, relay.address[1]))
                    sent += len(half)
                    # Paced, so that nothing is lost in the relay's receive buffer.
                    await wait_until(consumed(relay, in0 + sent))
            elapsed = trio.current_time() - start  # every request was handled within it
            count, bytes_out = await answered_all(out0, bytes_out0)
            requests = REQUEST_SOURCES * REQUESTS_PER_SOURCE
            assert relay.counters.datagrams_in - in0 == requests
            assert count + dropped(relay, "rate_limited") - limited0 == requests
            # The first hundred requests come from a hundred fresh sources: all answered.
            assert count >= config.key_answers_total_burst
            assert count <= answer_bound(config, REQUEST_SOURCES, elapsed)
            per_source = (
                config.key_answers_per_source_burst + config.key_answers_per_source_per_s * elapsed
            )
            assert max(answers) <= per_source
            assert bytes_out == answer_bytes[0] == count * len(answer)
            amplification = bytes_out / (requests * len(request))
            bound = (
                answer_bound(config, REQUEST_SOURCES, elapsed)
                * len(answer)
                / (requests * len(request))
            )
            assert amplification <= bound
            print(
                f"reflection: {requests} requests in {elapsed:.3f} s, {count} answered, "
                f"{bytes_out} bytes out for {requests * len(request)} in: x{amplification:.2f} "
                f"(bound x{bound:.2f})"
            )

            # The same on the limiter's own clock, where the answer is exact: the relay
            # takes ``now`` from its caller, so two waves one second apart are exactly that.
            answers[:] = [0] * REQUEST_SOURCES
            out0, bytes_out0 = relay.counters.datagrams_out, relay.counters.bytes_out
            wave = trio.current_time() + 1000.0  # every bucket full again, long forgotten
            for moment in (wave, wave + 1.0):
                for _ in range(REQUESTS_PER_SOURCE):
                    for source in sources:
                        relay.handle_datagram(request, source, moment)
            count, bytes_out = await answered_all(out0, bytes_out0)
            # Wave 1: the total burst (100; the per-source bursts would allow 600). Wave 2,
            # one second on: the total refill (50), each source having refilled one token.
            assert count == answer_bound(config, REQUEST_SOURCES, 1.0) == 150
            assert max(answers) <= config.key_answers_per_source_burst + 1
            assert bytes_out == 150 * len(answer)  # x4.27 the 16,000 bytes asked with
            listeners.cancel_scope.cancel()
