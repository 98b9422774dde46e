"""The hostile flood's generator and oracle (``test_hostile_input``).

:class:`Garbage` makes hostile datagrams from a seeded ``random.Random``; the oracle
says what the relay does with each: :func:`datagram_outcome` the drops a datagram
causes before reassembly (from the wire decoder), and a :class:`Shadow` reassembler
fed the same fragments at the same ``now`` what reassembly and decryption do. So a
test can check the relay's drop counters exactly, reason by reason.
"""

import math
import random
from collections import Counter
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

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
)
from mcrelay.protocol.legacy.fragments import (
    FRAGMENT_HEADER,
    Fragment,
    encode_fragment,
    split_payload,
)
from mcrelay.protocol.legacy.tlv import TLV_HEADER, TlvType
from mcrelay.protocol.reassembly import Complete, Reassembler, Rejected
from mcrelay.protocol.secure.header import MAGIC
from mcrelay.settings.config import RelayConfig

# The oracle: what the relay does with a datagram.


def datagram_outcome(
    data: bytes, *, registered: bool
) -> tuple[Counter[DropReason], list[Fragment]] | None:
    """The drops a datagram causes before reassembly, and the fragments it hands over.

    ``None`` for a datagram that would earn an answer or change the roster (a key
    request, a key the relay accepts, a registered source's DISCONNECT): the flood
    leaves those out, so that nothing is sent to a fake source and the roster holds.
    So it does a secure datagram (first byte 0x4D): this flood is the legacy profile's.
    """
    if data[:1] == bytes([MAGIC]):
        return None
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
            for pem in event.newest_first():
                try:
                    crypto.load_public_key_untrusted(pem)
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
            counted[DropReason.UNKNOWN_TYPE] += event.count
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
