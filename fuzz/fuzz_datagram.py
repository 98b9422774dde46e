"""Coverage-guided fuzzing of the relay's datagram handler, ``Relay.handle_datagram``.

Each input is a small program played against a fresh :class:`Relay` in its own Trio
run: datagrams from four sources (two registered, two strangers), fragments, whole
payloads, encrypted messages, key TLVs, control TLVs, replays and clock jumps. The
run is deterministic, so an input that fails fails again on replay:

- the clock is Trio's ``MockClock`` (time moves only when a program jumps it);
- the relay runs on the tests' harness (``tests/relay_harness.py``): its socket is a
  stub that records what the relay sends and never receives, so nothing goes on any
  network, and the crypto runs inline, on the Trio thread, instead of in worker
  threads (its results still come back through the run loop, as from the threads);
- Trio's scheduler is seeded, the way pytest-trio does it under Hypothesis.

After every operation the harness checks that no exception escaped and that the
relay's books balance (see :func:`check_books`); after every settled operation and at
the end, that nothing leaked (see :func:`check_settled`). Any failure is a crash.

Usage (``fuzz/README.md`` has more)::

    python fuzz/fuzz_datagram.py -max_total_time=120 CORPUS_DIR   # atheris (libFuzzer flags)
    python fuzz/fuzz_datagram.py --engine hypothesis --examples 20000
    python fuzz/fuzz_datagram.py --write-seeds CORPUS_DIR
    python fuzz/fuzz_datagram.py --replay CRASH_FILE...
"""

import argparse
import base64
import contextlib
import importlib
import math
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeVar


def _load_atheris(argv: list[str]) -> ModuleType | None:
    """atheris when it is installed and wanted (it must instrument mcrelay before import)."""
    if "hypothesis" in argv or any(arg.startswith("--engine=hypothesis") for arg in argv):
        return None
    try:
        return importlib.import_module("atheris")
    except ImportError:
        return None


_atheris = _load_atheris(sys.argv)

import trio  # noqa: E402 - atheris, when present, instruments what the block below imports
import trio.testing  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

# The relay on a stub socket with inline crypto: the tests' harness, one copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

with _atheris.instrument_imports(include=["mcrelay"]) if _atheris else contextlib.nullcontext():
    from runner import Runs, run_engine

    from mcrelay.daemon.relay import Relay
    from mcrelay.protocol import legacy
    from mcrelay.protocol.addresses import Address, format_address
    from mcrelay.protocol.errors import DropReason
    from mcrelay.protocol.legacy import crypto
    from mcrelay.protocol.legacy.fragments import FRAGMENT_HEADER, MAX_FRAGMENTS, split_payload
    from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
    from mcrelay.protocol.reassembly import FRAGMENT_OVERHEAD_BYTES, MESSAGE_OVERHEAD_BYTES
    from mcrelay.settings.config import RelayConfig
    from relay_harness import UNUSABLE_PEM, Harness, harness_config, open_relay, running_tasks

T = TypeVar("T")

SOURCES: list[Address] = [
    ("127.0.0.1", 40001),  # registered before the program runs
    ("127.0.0.1", 40002),  # registered before the program runs
    ("127.0.0.1", 40003),  # a stranger
    ("10.0.0.9", 40004),  # a stranger from another host
]
MAX_OPERATIONS = 64
MAX_INPUT_BYTES = 8192
REPORT_EVERY = 5000

# Operation kinds: the low 3 bits of an operation's first byte.
DATAGRAM, FRAGMENT, KEY_DER, PAYLOAD, MESSAGE, CLOCK, CONTROL, REPLAY = range(8)


@dataclass
class Keys:
    relay: rsa.RSAPrivateKey
    client: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey

    @classmethod
    def derive(cls) -> "Keys":
        return cls(*(deterministic_key(seed) for seed in (1, 2, 3)))


_SMALL_PRIMES_PRODUCT = math.prod(
    n for n in range(3, 2000, 2) if all(n % d for d in range(3, math.isqrt(n) + 1, 2))
)


def _probable_prime(rng: random.Random, bits: int) -> int:
    """A random prime of exactly ``bits`` bits, its top two bits set (Miller-Rabin)."""
    while True:
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if (
            math.gcd(candidate, _SMALL_PRIMES_PRODUCT) != 1
            or candidate % crypto.PUBLIC_EXPONENT == 1
        ):
            continue
        d, r = candidate - 1, 0
        while d % 2 == 0:
            d, r = d // 2, r + 1
        for _ in range(8):
            x = pow(rng.randrange(2, candidate - 1), d, candidate)
            if x in (1, candidate - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, candidate)
                if x == candidate - 1:
                    break
            else:
                break
        else:
            return candidate


def deterministic_key(seed: int, bits: int = crypto.KEY_BITS) -> rsa.RSAPrivateKey:
    """The same RSA key on every run, so that saved inputs (ciphertexts) keep their meaning."""
    rng = random.Random(seed)
    p, q = _probable_prime(rng, bits // 2), _probable_prime(rng, bits // 2)
    e = crypto.PUBLIC_EXPONENT
    d = pow(e, -1, math.lcm(p - 1, q - 1))
    public = rsa.RSAPublicNumbers(e, p * q)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
    )
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)  # built right above


def make_configs() -> list[RelayConfig]:
    """Three profiles, picked by an input's first byte: tight limits (most bounds within
    a few datagrams), roomy messages under the smallest byte cap, and the defaults."""
    tight = harness_config(
        client_timeout_s=5.0,
        reassembly_timeout_s=0.5,
        max_message_bytes=1000,
        max_messages_per_source=3,
        max_reassembly_bytes=65536,
        max_clients=3,
        max_pending_relays=4,
        send_queue_datagrams=1,
        key_answers_per_source_burst=2,
        key_answers_per_source_per_s=1.0,
        key_answers_total_burst=3,
        key_answers_total_per_s=2.0,
    )
    roomy = harness_config(reassembly_timeout_s=2.0, max_reassembly_bytes=65536)
    return [tight, roomy, harness_config()]


def operations(data: bytes) -> Iterator[tuple[int, int, int, bool, bytes]]:
    """(kind, source, variant, settle, value) for each operation of a program.

    Byte 0 picks the relay's configuration. Then each operation is a head byte
    (bits 0-2 kind, 3-4 source, 5-6 variant, 7 "do not settle"), a u16 length and
    that many bytes of value (fewer if the input ends first).
    """
    offset = 1
    for _ in range(MAX_OPERATIONS):
        if offset >= len(data):
            return
        head = data[offset]
        length = int.from_bytes(data[offset + 1 : offset + 3], "big")
        value = data[offset + 3 : offset + 3 + length]
        offset += 3 + length
        yield head & 7, (head >> 3) & 3, (head >> 5) & 3, not head & 0x80, value


def armored(der: bytes, label: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN " + label + b"-----\n" + lines + b"\n-----END " + label + b"-----\n"


@dataclass
class Program:
    """One input, played against one relay."""

    harness: Harness
    clock: trio.testing.MockClock
    keys: Keys
    fed: int = 0
    fed_bytes: int = 0
    last: tuple[bytes, Address] | None = None
    dropped_before: int = 0
    baseline_tasks: int = 0
    """The run's tasks once the relay is up: no input may leave one more behind."""
    checked: int = 0
    """Sends already checked by :func:`check_settled`."""

    @property
    def relay(self) -> Relay:
        return self.harness.relay

    def feed(self, datagram: bytes, source: Address) -> None:
        self.relay.handle_datagram(datagram, source, trio.current_time())
        self.fed += 1
        self.fed_bytes += len(datagram)
        self.last = (datagram, source)

    def datagrams_for(self, kind: int, variant: int, value: bytes) -> list[bytes]:
        relay_public = self.keys.relay.public_key()
        msg_id = bytes([variant]) * 4
        if kind == DATAGRAM:
            return [value]
        if kind == FRAGMENT and variant == 3:
            # A storm. Total 1 to 7: first fragments of as many messages (a total of 1
            # completes each at once); total byte 0 mod 8: fragments of eight messages of
            # the largest size, round-robin, until the byte cap stops them.
            count, spec = (value[0], value[1]) if len(value) >= 2 else (8, 2)
            storm: list[bytes] = []
            for n in range(count):
                msg, seq, total = (
                    (n % 8, n // 8, MAX_FRAGMENTS) if spec % 8 == 0 else (n, 0, spec % 8)
                )
                header = FRAGMENT_HEADER.pack(b"\xee\x00\x00" + bytes([msg]), seq, total)
                storm.append(encode_tlv(TlvType.FRAGMENT, header + value[2:]))
            return storm
        if kind == FRAGMENT:
            header = value[:3].ljust(3, b"\x00")
            fragment_id = bytes([header[0] % 8]) * 4
            return [
                encode_tlv(
                    TlvType.FRAGMENT,
                    FRAGMENT_HEADER.pack(fragment_id, header[1], header[2]) + value[3:],
                )
            ]
        if kind == KEY_DER:
            label = b"RSA PUBLIC KEY" if variant & 1 else b"PUBLIC KEY"
            return [encode_tlv(TlvType.CLIENT_PUBLIC_KEY, armored(value, label))]
        if kind == PAYLOAD:
            fragments = split_payload(value[: MAX_FRAGMENTS * 256], msg_id)
            datagrams = [
                encode_tlv(
                    TlvType.FRAGMENT, FRAGMENT_HEADER.pack(f.msg_id, f.seq, f.total) + f.piece
                )
                for f in fragments
            ]
            return datagrams[::-1] if variant & 2 else datagrams
        if kind == MESSAGE:
            datagrams = legacy.message_datagrams(relay_public, value[:380], msg_id)
            return datagrams + datagrams[:1] if variant & 2 else datagrams
        if kind == CONTROL:
            return [self.control(value[0] if value else 0)]
        return []

    def operator(self, choice: int, source: Address, value: bytes) -> bool:
        """An operator's action on ``source`` (through the API, in the daemon); false if none."""
        if choice == 8:
            self.relay.kick(format_address(source))
        elif choice == 9:
            self.relay.kick(format_address(source), ban_s=float(value[1] if len(value) > 1 else 1))
        else:
            return False
        return True

    def control(self, choice: int) -> bytes:
        """A control datagram: 0 key request, 1 keepalive, 2 disconnect, 3 our key, 4 another
        key, 5 keepalive with our key, 6 CONNECT, 7 DISCONNECT, 10 an unusable key."""
        relay_public = self.keys.relay.public_key()
        choices: list[Callable[[], bytes]] = [
            legacy.key_request,
            legacy.keepalive,
            legacy.disconnect,
            lambda: legacy.client_key(self.keys.client.public_key()),
            lambda: legacy.client_key(self.keys.other.public_key()),
            lambda: legacy.keepalive() + legacy.client_key(self.keys.client.public_key()),
            lambda: legacy.message_datagrams(
                relay_public, legacy.CONNECT_WORD, b"\xc0\x00\x00\x01"
            )[0],
            lambda: b"".join(
                legacy.message_datagrams(relay_public, legacy.DISCONNECT_WORD, b"\xd0\x00\x00\x01")
            ),
            # 8 and 9 are the operator's (see operator()); 10: a key OpenSSL will not encrypt
            # with (an even modulus), so every copy for this client fails to seal.
            legacy.keepalive,
            legacy.keepalive,
            lambda: encode_tlv(TlvType.CLIENT_PUBLIC_KEY, UNUSABLE_PEM),
        ]
        return choices[choice % len(choices)]()

    async def run(self, data: bytes) -> None:
        for source in SOURCES[:2]:
            self.feed(legacy.client_key(self.keys.client.public_key()), source)
        check_books(self)
        for kind, source_index, variant, settle, value in operations(data):
            source = SOURCES[source_index]
            if kind == CLOCK:
                scale = (0.001, 0.01, 0.1, 1.0)[variant]
                self.clock.jump(int.from_bytes(value[:2].rjust(2, b"\x00"), "big") * scale)
            elif kind == CONTROL and self.operator(value[0] % 11 if value else 0, source, value):
                pass
            elif kind == REPLAY:
                if self.last is not None:
                    self.feed(self.last[0], source if variant & 1 else self.last[1])
            else:
                for datagram in self.datagrams_for(kind, variant, value):
                    self.feed(datagram, source)
            check_books(self)
            if settle:
                await trio.testing.wait_all_tasks_blocked()
                check_books(self)
                check_settled(self)
            else:
                await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        check_books(self)
        check_settled(self)
        # Past every deadline and client timeout: everything held must be let go.
        self.clock.jump(10 * self.relay.config.client_timeout_s)
        await trio.testing.wait_all_tasks_blocked()
        check_books(self)
        check_settled(self)
        relay = self.relay
        held = relay.statistics()
        assert held.reassembly_in_flight == 0, held.reassembly_in_flight
        assert held.reassembly_bytes == 0, held.reassembly_bytes
        assert len(relay.roster) == 0, "every client timed out"
        assert relay.statistics().send_queue == 0


def check_books(program: Program) -> None:
    """Counters and reassembly accounting agree with what was fed, after any operation."""
    relay = program.relay
    counters = relay.counters
    assert counters.datagrams_in == program.fed, (counters.datagrams_in, program.fed)
    assert counters.bytes_in == program.fed_bytes, (counters.bytes_in, program.fed_bytes)
    assert counters.dropped[DropReason.INTERNAL_ERROR] == 0, "a relay task hit a bug"
    dropped = sum(counters.dropped.values())
    assert dropped >= program.dropped_before
    program.dropped_before = dropped
    sock = program.harness.sock
    assert counters.datagrams_out == len(sock.sent)
    assert counters.bytes_out == sock.sent_bytes
    # The reassembler's and the roster's books are checked against what they hold, which
    # only their private fields show: the one place that reads them (the tests do not).
    assert relay.legacy is not None
    reassembler = relay.legacy.reassembler
    partials = reassembler._partials
    charged = sum(
        MESSAGE_OVERHEAD_BYTES
        + sum(len(piece) + FRAGMENT_OVERHEAD_BYTES for piece in partial.pieces.values())
        for partial in partials.values()
    )
    assert reassembler.buffered_bytes == charged, (reassembler.buffered_bytes, charged)
    assert 0 <= reassembler.buffered_bytes <= reassembler.max_total_bytes
    per_source = Counter(key[0] for key in partials)
    assert all(n <= reassembler.max_messages_per_source for n in per_source.values()), per_source
    held = {source: len(keys) for source, keys in reassembler._per_source.items()}
    assert held == dict(per_source), (held, per_source)
    assert sum(reassembler.bytes_per_source().values()) == reassembler.buffered_bytes
    assert all(
        len(partial.pieces) < partial.total <= reassembler.max_fragments
        for partial in partials.values()
    )
    pending = relay.statistics().pending_relays
    assert isinstance(pending, int)
    assert 0 <= pending <= relay.config.max_pending_relays
    assert relay.roster._per_host == Counter(
        (member.identity.profile, member.address[0]) for member in relay.roster
    )


def check_settled(program: Program) -> None:
    """Once every task is blocked: nothing is stuck between completion and fan-out."""
    relay = program.relay
    assert relay.statistics().pending_relays == 0, "a completed message is stuck"
    assert relay.statistics().leaves_pending == 0, "a leave is stuck behind no message"
    # What runs beyond the relay's own tasks: one task per message still in reassembly.
    expected = program.baseline_tasks + relay.statistics().reassembly_in_flight
    assert running_tasks() == expected, (running_tasks(), expected)
    sent = program.harness.sock.sent
    for data, address in sent[program.checked :]:
        assert address in SOURCES, f"sent to {address}, which never wrote to the relay"
        legacy.decode_relay_datagram_untrusted(data)  # the relay never sends malformed datagrams
    program.checked = len(sent)


class Fuzzer(Runs):
    def __init__(self) -> None:
        super().__init__(make_configs(), MAX_INPUT_BYTES, REPORT_EVERY)
        self.keys = Keys.derive()

    async def play(self, data: bytes, config: RelayConfig, clock: trio.testing.MockClock) -> None:
        async with open_relay(self.keys.relay, config) as harness:
            program = Program(harness, clock, self.keys)
            program.baseline_tasks = running_tasks()
            await program.run(data)
            for reason, count in harness.relay.counters.dropped.items():
                self.reasons[reason.value] += count


def seeds(keys: Keys) -> dict[str, bytes]:
    """Starting programs that reach each part of the handler."""

    def op(kind: int, source: int, value: bytes, variant: int = 0, settle: bool = True) -> bytes:
        head = kind | source << 3 | variant << 5 | (0 if settle else 0x80)
        return bytes([head]) + len(value).to_bytes(2, "big") + value

    relay_public = keys.relay.public_key()
    two_fragments = legacy.message_datagrams(relay_public, b"hello", b"\x00\x00\x00\x07")
    pem = crypto.public_key_to_pem(keys.other.public_key())
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    return {
        "message": b"\x00" + op(MESSAGE, 0, b"hello there"),
        "message-defaults": b"\x01" + op(MESSAGE, 1, b"x" * 300, variant=2),
        "fragments-reversed": b"\x00"
        + op(DATAGRAM, 0, two_fragments[1])
        + op(DATAGRAM, 0, two_fragments[0]),
        "fragment-then-timeout": b"\x00"
        + op(FRAGMENT, 0, b"\x01\x00\x03abc")
        + op(CLOCK, 0, b"\x00\x02", variant=3),
        "payload-bad-blocks": b"\x00"
        + op(PAYLOAD, 1, encode_tlv(TlvType.ENCRYPTED_BLOCK, b"z" * 256)),
        "payload-not-blocks": b"\x00" + op(PAYLOAD, 0, encode_tlv(TlvType.KEEPALIVE, b"")),
        "key-request-stranger": b"\x00" + op(CONTROL, 2, b"\x00") * 5,
        "register-stranger": b"\x00" + op(CONTROL, 3, b"\x03") + op(MESSAGE, 3, b"hi"),
        "rekey-and-disconnect": b"\x00" + op(CONTROL, 0, b"\x04") + op(CONTROL, 0, b"\x02"),
        "control-words": b"\x00" + op(CONTROL, 1, b"\x06") + op(CONTROL, 1, b"\x07"),
        "key-der": b"\x00" + op(KEY_DER, 2, der) + op(KEY_DER, 3, der[:-3], variant=1),
        "unsettled": b"\x00"
        + op(MESSAGE, 0, b"a" * 200, settle=False)
        + op(CONTROL, 0, b"\x02", settle=False)
        + op(REPLAY, 1, b"", variant=1),
        "junk": b"\x00"
        + op(DATAGRAM, 2, b"\x00\x63\x00\x00\x00\x0b\x00\x06\x7f\x00\x00\x01\x00\x01"),
        "storm": b"\x00" + op(FRAGMENT, 0, b"\x10\x03" + b"s" * 200, variant=3),
        "storm-roomy": b"\x01"
        + op(FRAGMENT, 0, b"\x3f\x07" + b"s" * 256, variant=3)
        + op(FRAGMENT, 1, b"\xff\x08" + b"t" * 256, variant=3),
        "burst-of-completions": b"\x00" + op(FRAGMENT, 1, b"\x20\x01", variant=3, settle=False),
        "too-many-blocks": b"\x00" + op(PAYLOAD, 0, encode_tlv(TlvType.ENCRYPTED_BLOCK, b"") * 9),
        "registry-full": b"\x00" + op(CONTROL, 2, b"\x03") + op(CONTROL, 3, b"\x03"),
        "kick-in-flight": b"\x00"
        + op(MESSAGE, 0, b"m" * 300, settle=False)
        + op(CONTROL, 0, b"\x08", settle=False)
        + op(CONTROL, 0, b"\x03"),
        "ban": b"\x00" + op(CONTROL, 1, b"\x09\x05") + op(MESSAGE, 1, b"banned"),
        "unusable-key": b"\x02" + op(CONTROL, 2, b"\x0a") + op(MESSAGE, 0, b"to all"),
    }


def run_hypothesis(fuzzer: Fuzzer, examples: int, seed: int | None) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    head = st.integers(0, 255)
    value = st.binary(max_size=600) | st.sampled_from(list(seeds(fuzzer.keys).values()))
    operation = st.builds(lambda h, v: bytes([h]) + len(v).to_bytes(2, "big") + v, head, value)
    programs = st.builds(
        lambda first, ops: bytes([first]) + b"".join(ops),
        st.integers(0, 1),
        st.lists(operation, max_size=12),
    )

    def target(data: bytes) -> None:
        fuzzer.run_one(data)

    test: Callable[[], None] = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(given(programs | st.binary(max_size=2048))(target))
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    for sample in seeds(fuzzer.keys).values():
        fuzzer.run_one(sample)
    test()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["atheris", "hypothesis"], default=None)
    parser.add_argument("--examples", type=int, default=20000, help="hypothesis: inputs to try")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis: random seed")
    parser.add_argument(
        "--write-seeds", type=Path, metavar="DIR", help="write seed inputs and exit"
    )
    parser.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="replay inputs")
    options, rest = parser.parse_known_args(argv)
    fuzzer = Fuzzer()
    if options.write_seeds:
        options.write_seeds.mkdir(parents=True, exist_ok=True)
        for name, data in seeds(fuzzer.keys).items():
            (options.write_seeds / f"seed-{name}").write_bytes(data)
        return 0
    return run_engine(
        parser,
        options,
        rest,
        fuzzer,
        _atheris,
        lambda: run_hypothesis(fuzzer, options.examples, options.seed),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
