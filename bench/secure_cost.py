"""What the secure relay's path costs per message, in one process, deterministically.

    .venv/bin/python bench/secure_cost.py            # about 40 s
    .venv/bin/python bench/secure_cost.py --profile  # the relay's part under cProfile (S=1 R=2)

``run.py secure`` measures the daemon as operators run it (its own process, real
sockets, the members in other processes on the same two cores): right for the
targets, but its figures move with the machine and the load's timing, too much to
tell one version of the relay's code from the next. This runs the relay in the
tests' harness (a stub socket, the mock clock, nothing on any network) with secure
members in the same Trio run, driven in lock step: every PERIOD_S of simulated time
each sender queues one 100-byte CHAT, every member takes what the relay sent it and
sends what its session sends (the CHATs' DATAs, ACKs), the relay takes those DATAs
in (``Relay.handle_datagram``) and its tasks run (the message's task, the sessions'
timers and coalescing) while the clock moves PERIOD_S.

Reported per relayed message, median of ROUNDS: the relay's CPU (the run's CPU minus
the members', each member's work timed where it is done); as the baseline measured
in the same run, the AEAD alone for the same datagrams (one ChaCha20-Poly1305 open
per DATA in, one seal per DATA out, of their sizes: what no implementation of the
page can avoid), and the ratio; the DATAs in and out per message. The stub socket
costs a list append where the daemon pays ``sendto``, and the mock clock's jumps
stand in for epoll: the absolute figures are below the daemon's, the differences
between versions are the code's.
"""

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.data import DATA_HEADER, NONCE
from mcrelay.protocol.secure.messages import Chat, RelayedChat, encode_message

MESSAGES = 3_000
"""Per sender and round."""
ROUNDS = 5
PERIOD_S = 0.00025
"""Between one sender's messages: 4,000 a second, the S=1 R=2 secure lossless rate
of the last ``make bench`` (77d9630)."""
TAIL_STEPS = 100
"""Steps after the last message (25 ms: past the longest an ACK waits, 10 ms)."""
SIZE = 100
CONFIGS = ((1, 2), (4, 8))
TAG_BYTES = 16


class QueuedLink:
    """A member's link once it is connected: what it sends waits in :attr:`outbound`
    (the relay takes it in outside the members' timed work); the lock step puts what
    the relay sent it in :attr:`inbox`."""

    def __init__(self, harness: object, address: Address) -> None:
        from relay_harness import Harness

        assert isinstance(harness, Harness)
        self.harness = harness
        self.relay_public = harness.secure_key.public
        self.address = address
        self.outbound: list[tuple[bytes, Address]] = []
        self.inbox: list[bytes] = []

    def send(self, data: bytes, source: Address) -> None:
        self.outbound.append((data, source))

    def received(self, address: Address) -> list[bytes]:
        taken, self.inbox = self.inbox, []
        return taken

    async def settle(self) -> None:
        raise AssertionError("the lock step moves the clock")


def aead_floor_us(sizes_in: list[int], sizes_out: list[int]) -> float:
    """CPU to open the DATAs in and seal the DATAs out, of these sizes, alone."""
    aead = ChaCha20Poly1305(os.urandom(32))
    header = DATA_HEADER.pack(0x4D, 4, 0, 1, 0)
    opened = [
        (
            NONCE.pack(n),
            aead.encrypt(NONCE.pack(n), bytes(size - DATA_HEADER.size - TAG_BYTES), header),
        )
        for n, size in enumerate(sizes_in)
    ]
    plaintexts = [bytes(size - DATA_HEADER.size - TAG_BYTES) for size in sizes_out]
    start = time.process_time()
    for nonce, ciphertext in opened:
        aead.decrypt(nonce, ciphertext, header)
    for n, plaintext in enumerate(plaintexts):
        header + aead.encrypt(NONCE.pack(n), plaintext, header)
    return (time.process_time() - start) * 1e6


@dataclass(frozen=True)
class Round:
    senders: int
    receivers: int
    messages: int = MESSAGES
    """Per sender."""
    idle: bool = False
    """The same steps with nothing sent (the baseline)."""
    profiler: cProfile.Profile | None = None
    """The relay's part of the steps runs under it (the members' work does not)."""


async def lock_step(key: rsa.RSAPrivateKey, round_: Round) -> dict[str, float]:
    from relay_harness import open_relay
    from secure_harness import connected

    senders, receivers, messages, idle = (
        round_.senders,
        round_.receivers,
        round_.messages,
        round_.idle,
    )
    profiler = round_.profiler

    async with open_relay(key) as harness:
        peers = await connected(harness, senders + receivers)
        for _ in range(2):  # until quiet: every PRESENCE delivered and acknowledged
            for peer in peers:
                await peer.pump()
        links = {}
        for peer in peers:
            peer.take()
            links[peer.address] = peer.link = QueuedLink(harness, peer.address)
        relay, sent = harness.relay, harness.sock.sent
        body = encode_message(Chat(b"x" * SIZE))
        read = len(sent)
        sizes_in: list[int] = []
        sizes_out: list[int] = []
        delivered = 0
        members = 0.0
        if profiler is not None:
            profiler.enable()
        start = time.process_time()
        expected = 0 if idle else messages * senders * (senders + receivers - 1)
        for step in range(messages + TAIL_STEPS):
            now = trio.current_time()
            if profiler is not None:
                profiler.disable()
            began = time.process_time()
            for data, to in sent[read:]:
                links[to].inbox.append(data)
                sizes_out.append(len(data))
            read = len(sent)
            for n, peer in enumerate(peers):
                assert peer.session is not None
                if n < senders and step < messages and not idle:
                    peer.session.channel.send(body, now)
                peer.receive()
                delivered += sum(isinstance(m, RelayedChat) for m in peer.take())
                peer.flush()
            outbound = [item for link in links.values() for item in link.outbound]
            for link in links.values():
                link.outbound.clear()
            members += time.process_time() - began
            if profiler is not None:
                profiler.enable()
            for data, source in outbound:
                sizes_in.append(len(data))
                relay.handle_datagram(data, source, now)
            await trio.sleep(PERIOD_S)
        cpu = time.process_time() - start - members
        if profiler is not None:
            profiler.disable()
        relayed = messages * senders
        dropped = {reason: n for reason, n in relay.statistics().dropped.items() if n}
        assert not dropped, dropped
        assert delivered == expected, (delivered, expected)
        return {
            "relay_us": cpu * 1e6 / relayed,
            "aead_us": aead_floor_us(sizes_in, sizes_out) / relayed,
            "datas_in": len(sizes_in) / relayed,
            "datas_out": len(sizes_out) / relayed,
        }


def measure(key: rsa.RSAPrivateKey, round_: Round) -> dict[str, float]:
    return trio.run(lock_step, key, round_, clock=trio.testing.MockClock(autojump_threshold=0))


def config(text: str) -> tuple[int, int]:
    senders, receivers = (int(part) for part in text.split(":"))
    if senders < 1 or receivers < 1:
        raise argparse.ArgumentTypeError("at least one sender and one receiver")
    return senders, receivers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="store_true", help="1 sender, 2 receivers, cProfile")
    parser.add_argument(
        "--config", action="append", type=config, help="S:R (senders:receivers), again for more"
    )
    parser.add_argument("--out", type=Path, default=Path("secure-cost.prof"), help="its statistics")
    args = parser.parse_args()
    key = rsa.generate_private_key(65537, 2048)
    if args.profile:
        profiler = cProfile.Profile(time.process_time)
        measure(key, Round(1, 2, profiler=profiler))
        profiler.dump_stats(args.out)
        stats = pstats.Stats(str(args.out))
        stats.sort_stats("tottime").print_stats(r"mcrelay|trio|builtins", 40)
        stats.sort_stats("cumulative").print_stats(r"mcrelay/(daemon|protocol)", 40)
        return
    print(
        f"median of {ROUNDS} rounds of {MESSAGES} messages per sender, {SIZE} bytes, one "
        f"every {PERIOD_S * 1e6:.0f} us of simulated time per sender; us of CPU per "
        "relayed message"
    )
    print(
        "| senders | receivers | relay | idle steps (baseline) | relay - idle | AEAD alone "
        "| (relay - idle) / AEAD | DATAs in / msg | DATAs out / msg |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for senders, receivers in args.config or CONFIGS:
        rounds = []
        for _ in range(ROUNDS):  # alternating, so that a slow moment costs both alike
            busy = measure(key, Round(senders, receivers))
            busy["idle_us"] = measure(key, Round(senders, receivers, idle=True))["relay_us"]
            busy["work_us"] = busy["relay_us"] - busy["idle_us"]
            rounds.append(busy)
        med = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        print(
            f"| {senders} | {receivers} | {med['relay_us']:.1f} | {med['idle_us']:.1f} "
            f"| {med['work_us']:.1f} | {med['aead_us']:.1f} "
            f"| {med['work_us'] / med['aead_us']:.1f} | {med['datas_in']:.2f} "
            f"| {med['datas_out']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
