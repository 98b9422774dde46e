"""Coverage-guided fuzzing of the relay's secure profile, through ``Relay.handle_datagram``.

Each input is a small program played against a fresh relay (the tests' harness, as
``fuzz_datagram.py`` uses it: stub socket, inline crypto, Trio's ``MockClock``, a
seeded scheduler) that serves both profiles and has two secure members already.
Their keys are fixed, and the program's operations are made *with* those keys, so
the fuzzer gets past mac1 and the AEAD: raw 0x4D datagrams, any plaintext sealed
under a member's keypair (the frames), message bodies carried by a member's real
channel (fragmentation, ACKs, in-order delivery), rekeys, replacements, mutated
INITs, KEY_QUERYs, replays and mutations of anything sent so far, legacy control from
a member's address, operators' kicks, bans, posts and reloads, and clock jumps.

After every operation (:func:`check_books`): nothing escaped, the counters equal what
was fed, no ``internal_error``, and every bound of the profile holds (members, pending
handshakes, the index table, the receive and send buffers). At the end the clock
jumps past every timeout: then nothing may be held (:func:`check_idle`).

Usage (``fuzz/README.md``)::

    python fuzz/fuzz_secure.py -max_total_time=120 CORPUS_DIR    # atheris
    python fuzz/fuzz_secure.py --engine hypothesis --examples 2000
    python fuzz/fuzz_secure.py --write-seeds CORPUS_DIR
    python fuzz/fuzz_secure.py --replay FILE...
"""

import argparse
import contextlib
import dataclasses
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing

# Before mcrelay is imported: fuzz_datagram loads atheris and instruments mcrelay.
from fuzz_datagram import _atheris, deterministic_key, operations
from runner import Runs, run_engine

with _atheris.instrument_imports(include=["mcrelay"]) if _atheris else contextlib.nullcontext():
    from mcrelay.core.control import Overloaded
    from mcrelay.daemon.relay import Relay
    from mcrelay.daemon.secure.peers import Peer
    from mcrelay.daemon.secure.profile import SecureProfile
    from mcrelay.protocol import legacy
    from mcrelay.protocol.addresses import Address
    from mcrelay.protocol.errors import DropReason, ProtocolError
    from mcrelay.protocol.secure.admission import MAX_UNCONFIRMED_HANDSHAKES
    from mcrelay.protocol.secure.budget import MAX_TOTAL_BYTES
    from mcrelay.protocol.secure.channel import Role
    from mcrelay.protocol.secure.data import peek_data_untrusted
    from mcrelay.protocol.secure.handshake import Initiator, tai64n
    from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted
    from mcrelay.protocol.secure.keypairs import Keypair
    from mcrelay.protocol.secure.keyquery import encode_key_query
    from mcrelay.protocol.secure.keys import KeyPair, client_id
    from mcrelay.protocol.secure.messages import Chat, Disconnect, encode_message
    from mcrelay.protocol.secure.session import Session
    from mcrelay.settings.config import RelayConfig
    from relay_harness import RELAY_ADDRESS, Harness, harness_config, open_relay

MAX_INPUT_BYTES = 8192
REPORT_EVERY = 1000
STRANGER: Address = ("127.0.0.1", 40009)
SPOOFED: Address = ("10.0.0.9", 4004)

# Operation kinds: the low 3 bits of an operation's head byte.
RAW, SEALED, MESSAGE, HANDSHAKE, CLOCK, PUMP, REPLAY, CONTROL = range(8)


def fixed_key(name: bytes) -> KeyPair:
    return KeyPair.from_private(hashlib.blake2s(name).digest())


def fixed_bytes(seed: bytes, n: int) -> bytes:
    return hashlib.blake2s(seed, digest_size=32).digest()[:n].ljust(n, b"\x00")


def make_configs() -> list[RelayConfig]:
    """Defaults; cookies always; tight (5 s timeout, 2 members, a send bound of two of the
    largest copies: one such copy does not fit in the setting's floor, 64 KiB, see the
    README)."""
    tight = harness_config(client_timeout_s=5.0, max_send_queue_bytes=131072, max_clients=2)
    return [harness_config(), harness_config(cookies="always"), tight]


@dataclass
class Client:
    """A secure member of the program: fixed static key, a client session."""

    static: KeyPair
    address: Address
    epoch: int = 1
    session: Session | None = None
    handshakes: int = 0
    cookie: bytes | None = None

    def initiator(self, relay_public: bytes) -> Initiator:
        self.handshakes += 1
        seed = self.static.public + self.handshakes.to_bytes(4, "little")
        return Initiator(
            self.static,
            relay_public,
            ephemeral_private=fixed_bytes(b"e" + seed, 32),
            sender_index=int.from_bytes(fixed_bytes(b"i" + seed, 4), "little"),
            timestamp=tai64n(1_800_000_000 * 10**9 + self.handshakes * 10**6),
            epoch=self.epoch,
            cookie=self.cookie,
        )


@dataclass
class Program:
    harness: Harness
    clock: trio.testing.MockClock
    clients: list[Client]
    fed: int = 0
    fed_bytes: int = 0
    sent: list[tuple[bytes, Address]] = field(default_factory=list)
    """Every datagram fed, for replays."""
    read: int = 0
    dropped_before: int = 0

    @property
    def relay(self) -> Relay:
        return self.harness.relay

    @property
    def secure(self) -> SecureProfile:
        secure = self.relay.secure
        assert secure is not None
        return secure

    def feed(self, datagram: bytes, source: Address) -> None:
        self.relay.handle_datagram(datagram, source, trio.current_time())
        self.fed += 1
        self.fed_bytes += len(datagram)
        self.sent.append((datagram, source))

    async def handshake(self, client: Client, mutation: bytes = b"") -> None:
        """INIT (and INIT again with the cookie when a COOKIE comes); with the RESPONSE,
        the client's session starts or rekeys. A ``mutation`` is XORed into the INIT."""
        for _ in range(2):
            initiator = self.initiator_for(client)
            datagram = bytes(
                a ^ b for a, b in zip(initiator.datagram, mutation.ljust(152, b"\0"), strict=False)
            )
            mark = len(self.harness.sock.sent)
            self.feed(datagram, client.address)
            await trio.testing.wait_all_tasks_blocked()
            for data in self.answers(client.address, mark):
                kind = datagram_type_untrusted(data)
                with contextlib.suppress(ProtocolError):
                    if kind is DatagramType.COOKIE:
                        client.cookie = initiator.read_cookie_untrusted(data)
                    elif kind is DatagramType.RESPONSE:
                        established = initiator.read_response_untrusted(data)
                        now = trio.current_time()
                        keys, epoch = established.keys, established.relay_epoch
                        keypair = Keypair.from_handshake(keys, epoch, now)
                        if client.session is None:
                            client.session = Session(Role.CLIENT, keypair, RELAY_ADDRESS, now)
                        else:
                            client.session.install(keypair, now)
                        return
            if client.cookie is None:
                return

    def initiator_for(self, client: Client) -> Initiator:
        return client.initiator(self.harness.secure_key.public)

    def answers(self, address: Address, mark: int) -> list[bytes]:
        """What the relay sent ``address`` after the first ``mark`` datagrams it sent."""
        return [data for data, to in self.harness.sock.sent[mark:] if to == address]

    def flush(self, client: Client, source: Address | None = None) -> None:
        if client.session is not None:
            for data, _ in client.session.datagrams(trio.current_time()):
                self.feed(data, source or client.address)

    def pump(self) -> None:
        """Each client reads what the relay sent it, and sends what it has due."""
        sent = self.harness.sock.sent[self.read :]
        self.read = len(self.harness.sock.sent)
        now = trio.current_time()
        for client in self.clients:
            session = client.session
            if session is None:
                continue
            for data, to in sent:
                if to != client.address or data[:2] != bytes([0x4D, DatagramType.DATA]):
                    continue
                with contextlib.suppress(ProtocolError):
                    keypair = session.keypair(peek_data_untrusted(data).receiver_index, now)
                    if keypair is not None:
                        header = peek_data_untrusted(data)
                        session.receive_untrusted(keypair, data, header.counter, RELAY_ADDRESS, now)
            while session.channel.next_event() is not None:
                pass
            self.flush(client)

    async def operate(self, kind: int, who: int, variant: int, value: bytes) -> None:
        client = self.clients[who & 1]
        source = (client.address, client.address, STRANGER, SPOOFED)[who]
        if kind == RAW:
            self.feed(b"\x4d" + value, source)
        elif kind == SEALED and client.session is not None:
            keypair = client.session.previous if variant == 2 else client.session.current
            if keypair is not None and keypair.can_send(trio.current_time()):
                self.feed(keypair.seal(value[:1200]), source)
        elif kind == MESSAGE and client.session is not None:
            bodies = [
                lambda: encode_message(Chat(value)),
                lambda: value,
                lambda: encode_message(Disconnect()),
                lambda: encode_message(Chat((value or b"x") * (65536 // max(len(value), 1)))),
            ]
            with contextlib.suppress(ProtocolError):
                client.session.channel.send(bodies[variant](), trio.current_time())
            self.flush(client, source)
        elif kind == HANDSHAKE:
            if variant == 1:
                client.epoch += 1
            if variant == 3:
                self.feed(encode_key_query(value[:16].ljust(16, b"\0")), source)
            else:
                await self.handshake(client, value if variant == 2 else b"")
        elif kind == CLOCK:
            scale = (0.001, 0.01, 0.1, 1.0)[variant]
            self.clock.jump(int.from_bytes(value[:2].rjust(2, b"\0"), "big") * scale)
        elif kind == PUMP:
            for _ in range(variant + 1):
                self.pump()
                await trio.testing.wait_all_tasks_blocked()
        elif kind == REPLAY and self.sent:
            data, from_ = self.sent[
                int.from_bytes(value[:2].rjust(2, b"\0"), "big") % len(self.sent)
            ]
            if variant & 2 and len(value) > 3 and data:
                flipped = bytearray(data)
                flipped[value[2] % len(data)] ^= value[3] or 1
                data = bytes(flipped)
            self.feed(data, source if variant & 1 else from_)
        elif kind == CONTROL:
            await self.control(value[0] % 8 if value else 0, client, source, value[1:])

    async def control(self, choice: int, client: Client, source: Address, value: bytes) -> None:
        relay = self.relay
        member_id = client_id(client.static.public)
        if choice < 3:  # legacy control from a member's (or any) address
            datagram = (legacy.keepalive, legacy.disconnect, legacy.key_request)[choice]()
            self.feed(datagram, source)
        elif choice == 3:
            relay.kick(member_id)
        elif choice == 4:
            relay.kick(member_id, ban_s=float(value[0] if value else 1))
        elif choice == 5:
            cookies = "auto" if relay.config.cookies == "always" else "always"
            relay.reconfigure(dataclasses.replace(relay.config, cookies=cookies))
        elif choice == 6:
            with contextlib.suppress(Overloaded):
                await relay.post(value[:2000], list(relay.roster))
        else:
            self.feed(legacy.client_key(deterministic_key(1).public_key()), source)

    async def run(self, data: bytes) -> None:
        for client in self.clients:
            await self.handshake(client)
            self.pump()
        await trio.testing.wait_all_tasks_blocked()
        self.pump()
        check_books(self)
        for kind, who, variant, settle, value in operations(data):
            await self.operate(kind, who, variant, value)
            check_books(self)
            if settle:
                await trio.testing.wait_all_tasks_blocked()
                check_books(self)
            else:
                await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        check_books(self)
        self.clock.jump(10 * max(self.relay.config.client_timeout_s, 30.0))
        await trio.testing.wait_all_tasks_blocked()
        check_books(self)
        check_idle(self)


def check_books(program: Program) -> None:
    relay, secure = program.relay, program.secure
    counters = relay.counters
    assert counters.datagrams_in == program.fed, (counters.datagrams_in, program.fed)
    assert counters.bytes_in == program.fed_bytes
    assert counters.dropped[DropReason.INTERNAL_ERROR] == 0, "a relay task hit a bug"
    dropped = sum(counters.dropped.values())
    assert dropped >= program.dropped_before
    program.dropped_before = dropped
    assert counters.datagrams_out == len(program.harness.sock.sent)
    figures = secure.figures()
    assert 0 <= figures["handshakes_pending"] <= MAX_UNCONFIRMED_HANDSHAKES
    assert 0 <= figures["receive_buffer_bytes"] <= MAX_TOTAL_BYTES
    assert 0 <= figures["send_buffer_bytes"] <= relay.config.max_send_queue_bytes
    # The profile's tables, which only its private fields show (the tests do not read them).
    # A member being sent its farewell has left _peers and keeps its indexes until it closes.
    peers, pending, indexes = secure._peers, secure._pending, secure._indexes
    assert len(peers) <= len(program.clients)
    assert len(pending) <= len(program.clients)
    owners = {id(owner): owner for owner in indexes.values() if isinstance(owner, Peer)}
    assert all(not owner.closed for owner in owners.values())
    assert set(map(id, peers.values())) <= set(owners)
    assert len(indexes) <= 4 * len(owners) + len(pending), (len(indexes), len(owners))
    assert all(
        pending.get(i) is owner for i, owner in indexes.items() if owner not in owners.values()
    )
    held = sum(owner.copy_bytes for owner in owners.values())
    assert held == figures["send_buffer_bytes"], (held, figures)


def check_idle(program: Program) -> None:
    """Past every timeout: no member, no handshake, no buffer, no timer left."""
    secure = program.secure
    assert len(program.relay.roster) == 0, "every member timed out"
    assert secure.figures() == {
        "handshakes_pending": 0,
        "send_buffer_bytes": 0,
        "receive_buffer_bytes": 0,
    }
    assert not secure._peers
    assert not secure._indexes
    assert len(secure._timers) == 0, len(secure._timers)


class Fuzzer(Runs):
    def __init__(self) -> None:
        super().__init__(make_configs(), MAX_INPUT_BYTES, REPORT_EVERY)
        self.rsa_key = deterministic_key(1)

    async def play(self, data: bytes, config: RelayConfig, clock: trio.testing.MockClock) -> None:
        relay_key = fixed_key(b"relay")
        async with open_relay(self.rsa_key, config, secure_key=relay_key) as harness:
            clients = [
                Client(fixed_key(b"client %d" % n), ("127.0.0.1", 40001 + n)) for n in range(2)
            ]
            await Program(harness, clock, clients).run(data)
            for reason, count in harness.relay.counters.dropped.items():
                self.reasons[reason.value] += count


def op(kind: int, who: int, value: bytes, variant: int = 0, settle: bool = True) -> bytes:
    head = kind | who << 3 | variant << 5 | (0 if settle else 0x80)
    return bytes([head]) + len(value).to_bytes(2, "big") + value


def seeds() -> dict[str, bytes]:
    """Starting programs that reach each part of the secure path."""
    frames = bytes.fromhex("01 0800 00000000 0000 0100") + b"\x01" + b"\x02\x06\x00" + bytes(6)
    return {
        "chat": b"\x00" + op(MESSAGE, 0, b"hello") + op(PUMP, 0, b"", variant=2),
        "big-chat": b"\x00" + op(MESSAGE, 1, b"y" * 100, variant=3) + op(PUMP, 0, b"", variant=3),
        "sealed-frames": b"\x00" + op(SEALED, 0, frames) + op(SEALED, 1, b"\x05\x04\x00\x07\0\0\0"),
        "raw": b"\x00" + op(RAW, 2, b"\x04\x00\x00" + bytes(40)) + op(RAW, 3, b"\x01\x00\x00"),
        "rekey-replace": b"\x00" + op(HANDSHAKE, 0, b"") + op(HANDSHAKE, 1, b"", variant=1),
        "mutated-init": b"\x01" + op(HANDSHAKE, 0, bytes(150) + b"\x01", variant=2),
        "key-query": b"\x00" + op(HANDSHAKE, 2, b"n" * 16, variant=3),
        "replay": b"\x00" + op(MESSAGE, 0, b"once") + op(REPLAY, 0, b"\xff\xff") * 3,
        "roam": b"\x00"
        + op(SEALED, 2, b"", variant=0)
        + op(CLOCK, 0, b"\x01\x00")
        + op(PUMP, 0, b""),
        "controls": b"\x02" + b"".join(op(CONTROL, 0, bytes([n, 3])) for n in range(8)),
        "timeout": b"\x02" + op(MESSAGE, 0, b"x") + op(CLOCK, 0, b"\x00\x06", variant=3),
        "disconnect": b"\x00" + op(MESSAGE, 1, b"", variant=2) + op(PUMP, 0, b""),
    }


def run_hypothesis(fuzzer: Fuzzer, examples: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    value = st.binary(max_size=300) | st.sampled_from([b"", b"\xff\xff", b"hello"])
    operation = st.builds(op, st.integers(0, 7), st.integers(0, 3), value, st.integers(0, 3))
    programs = st.builds(
        lambda first, ops: bytes([first]) + b"".join(ops),
        st.integers(0, 2),
        st.lists(operation, max_size=10),
    )
    for sample in seeds().values():
        fuzzer.run_one(sample)
    settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(given(programs)(fuzzer.run_one))()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["atheris", "hypothesis"], default=None)
    parser.add_argument("--examples", type=int, default=2000, help="hypothesis: inputs to try")
    parser.add_argument("--write-seeds", type=Path, metavar="DIR", help="write seeds and exit")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="replay inputs")
    options, rest = parser.parse_known_args(argv)
    if options.write_seeds:
        options.write_seeds.mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            (options.write_seeds / f"seed-{name}").write_bytes(data)
        return 0
    fuzzer = Fuzzer()
    return run_engine(
        parser, options, rest, fuzzer, _atheris, lambda: run_hypothesis(fuzzer, options.examples)
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
