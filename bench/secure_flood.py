"""The secure profile under an INIT flood, and replayed DATA (issue 11): loopback only, bounded.

    .venv/bin/python bench/secure_flood.py [--label NAME] [--seconds S] [--rate N]

Runs ``python -m mcrelay daemon`` on 127.0.0.1 (both profiles, API on a Unix socket
in a temporary directory) and, in this process, secure members built from the
sans-I/O parts on real UDP sockets. Two members join, then for ``--seconds`` (20)
``--rate`` (10,000) INITs a second come from ``SPOOFERS`` sockets bound to as many
addresses in 127.0.2.0/24 (the loopback's spoofed sources), each INIT with a valid
mac1 over random bytes (anyone who knows the relay's public key can make one), while
one member sends the other a stamped message every ``CHAT_INTERVAL_S``; a third
member joins in the middle of the flood (it needs the cookie round trip). Then every
datagram the first member sent is sent again. Figures:

- delivered: the chat messages that arrived within ``LATE_S``, of those sent;
- what the relay sent the spoofed sources, by type, with the largest size (it must
  be COOKIE only, each smaller than the 152-byte INIT);
- replayed: the datagrams re-sent, the chat messages that arrived again (0), and the
  drop counters they moved (/v1/status).

Results go to the terminal and bench/results/secure_flood.json under ``--label``.
"""

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from hostile_relay import INTERFACE, running_daemon

from mcrelay.daemon.secure.keyfile import generate_secure_key_file
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import ProtocolError
from mcrelay.protocol.secure.channel import Role
from mcrelay.protocol.secure.channel_events import MessageDelivered
from mcrelay.protocol.secure.cookies import add_macs, mac1_key
from mcrelay.protocol.secure.data import peek_data_untrusted
from mcrelay.protocol.secure.handshake import Initiator, tai64n
from mcrelay.protocol.secure.header import SIZES, DatagramType, header
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.protocol.secure.messages import Chat, RelayedChat, decode_relay_message_untrusted
from mcrelay.protocol.secure.messages import encode_message as encode
from mcrelay.protocol.secure.session import Session

RESULTS = Path(__file__).parent / "results" / "secure_flood.json"
SPOOFERS = 200
BATCH_S = 0.01
CHAT_INTERVAL_S = 0.05
LATE_S = 2.0
JOIN_TIMEOUT_S = 10.0
INIT_BYTES = SIZES[DatagramType.INIT]


@dataclass
class Member:
    """A secure client on a real socket: handshake (with the cookie round trip), then a
    session whose datagrams a task sends whenever they are due."""

    relay: Address
    relay_public: bytes
    sock: trio.socket.SocketType
    static: KeyPair = field(default_factory=KeyPair.generate)
    session: Session | None = None
    sent: list[bytes] = field(default_factory=list)
    received: list[tuple[bytes, float]] = field(default_factory=list)
    cookies: int = 0
    wake: trio.Event = field(default_factory=trio.Event)

    async def send(self, data: bytes) -> None:
        self.sent.append(data)
        await self.sock.sendto(data, self.relay)

    async def join(self) -> None:
        cookie: bytes | None = None
        with trio.fail_after(JOIN_TIMEOUT_S):
            while self.session is None:
                initiator = Initiator(
                    self.static,
                    self.relay_public,
                    ephemeral_private=os.urandom(32),
                    sender_index=int.from_bytes(os.urandom(4), "little"),
                    timestamp=tai64n(time.time_ns()),
                    epoch=1,
                    cookie=cookie,
                )
                await self.send(initiator.datagram)
                with trio.move_on_after(1.0):
                    while True:
                        data = await self.sock.recv(2048)
                        kind = data[1] if data[:1] == b"\x4d" else 0
                        try:
                            if kind == DatagramType.COOKIE:
                                cookie = initiator.read_cookie_untrusted(data)
                                self.cookies += 1
                                break
                            if kind == DatagramType.RESPONSE:
                                established = initiator.read_response_untrusted(data)
                        except ProtocolError:
                            continue
                        if kind == DatagramType.RESPONSE:
                            now = trio.current_time()
                            keys, epoch = established.keys, established.relay_epoch
                            keypair = Keypair.from_handshake(keys, epoch, now)
                            self.session = Session(Role.CLIENT, keypair, self.relay, now)
                            return

    async def run(self) -> None:
        """Receive and send for the session, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive)
            while True:
                session = self.session
                assert session is not None
                for data, _ in session.datagrams(trio.current_time()):
                    await self.send(data)
                self.wake = trio.Event()
                with trio.move_on_at(max(session.next_deadline(), trio.current_time() + 0.001)):
                    await self.wake.wait()

    def say(self, text: bytes) -> None:
        assert self.session is not None
        self.session.channel.send(encode(Chat(text)), trio.current_time())
        self.wake.set()

    async def _receive(self) -> None:
        session = self.session
        assert session is not None
        while True:
            data = await self.sock.recv(2048)
            now = trio.current_time()
            try:
                header_ = peek_data_untrusted(data)
                keypair = session.keypair(header_.receiver_index, now)
                if keypair is None:
                    continue
                session.receive_untrusted(keypair, data, header_.counter, self.relay, now)
            except ProtocolError:
                continue
            while (event := session.channel.next_event()) is not None:
                if isinstance(event, MessageDelivered):
                    message = decode_relay_message_untrusted(event.body)
                    if isinstance(message, RelayedChat):
                        self.received.append((message.text, now))
            self.wake.set()


async def udp_socket(address: str = INTERFACE) -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind((address, 0))
    return sock


def flood_init(mac1: bytes) -> bytes:
    return add_macs(header(DatagramType.INIT) + os.urandom(INIT_BYTES - 36), mac1, None)


async def flood(
    relay: Address, relay_public: bytes, seconds: float, rate: int, spoofers: list[Any]
) -> int:
    """``rate`` INITs a second for ``seconds``, round-robin over the spoofed sockets."""
    mac1 = mac1_key(relay_public)
    per_batch = max(1, round(rate * BATCH_S))
    batches = int(seconds / BATCH_S)
    start, sent = trio.current_time(), 0
    for batch in range(batches):
        for _ in range(per_batch):
            await spoofers[sent % len(spoofers)].sendto(flood_init(mac1), relay)
            sent += 1
        await trio.sleep_until(start + (batch + 1) * BATCH_S)
    return sent


@dataclass
class Answers:
    """What the relay sent the spoofed sources: by type, and the largest."""

    kinds: Counter[str] = field(default_factory=Counter)
    largest: int = 0

    async def drain(self, sock: trio.socket.SocketType) -> None:
        while True:
            data = await sock.recv(2048)
            self.kinds[DatagramType(data[1]).name if data[:1] == b"\x4d" else "legacy"] += 1
            self.largest = max(self.largest, len(data))


async def status(daemon: Any) -> dict[str, Any]:
    async with daemon.http() as http:
        response = await http.get("/v1/status")
        result: dict[str, Any] = response.json()
        return result


async def run(daemon: Any, relay_public: bytes, seconds: float, rate: int) -> dict[str, Any]:
    relay = (INTERFACE, daemon.port)
    spoofers = [await udp_socket(f"127.0.2.{1 + n % 250}") for n in range(SPOOFERS)]
    for sock in spoofers:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 1 << 20)
    a, b, c = [Member(relay, relay_public, await udp_socket()) for _ in range(3)]
    await a.join()
    await b.join()
    sent_texts: dict[bytes, float] = {}
    spoofed = Answers()
    async with trio.open_nursery() as nursery:
        for sock in spoofers:
            nursery.start_soon(spoofed.drain, sock)
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        flooded: list[int] = []

        async def flooding() -> None:
            flooded.append(await flood(relay, relay_public, seconds, rate, spoofers))

        nursery.start_soon(flooding)
        start = trio.current_time()
        n = 0
        while trio.current_time() - start < seconds:
            text = b"%08d" % n
            sent_texts[text] = trio.current_time()
            a.say(text)
            n += 1
            if n == int(seconds / CHAT_INTERVAL_S / 2):
                await c.join()  # under load: the cookie round trip
                nursery.start_soon(c.run)
            await trio.sleep_until(start + n * CHAT_INTERVAL_S)
        await trio.sleep(LATE_S + 1.0)
        before = await status(daemon)
        delivered_before = len(b.received)
        replayed = list(a.sent)
        for data in replayed:
            await a.sock.sendto(data, relay)
        await trio.sleep(2.0)
        after = await status(daemon)
        nursery.cancel_scope.cancel()
    on_time = sum(1 for text, at in b.received if at - sent_texts.get(text, at) <= LATE_S)
    dropped = Counter(after["statistics"]["dropped"]) - Counter(before["statistics"]["dropped"])
    return {
        "seconds": seconds,
        "inits_sent": flooded[0] if flooded else 0,
        "inits_per_s": round((flooded[0] if flooded else 0) / seconds),
        "chat_sent": len(sent_texts),
        "chat_delivered_pct": round(100 * on_time / max(len(sent_texts), 1), 2),
        "chat_received": len({text for text, _ in b.received}),
        "chat_duplicates": len(b.received) - len({text for text, _ in b.received}),
        "late_joiner_cookies": c.cookies,
        "late_joiner_joined": c.session is not None,
        "answers_to_spoofers": dict(spoofed.kinds),
        "largest_answer_bytes": spoofed.largest,
        "init_bytes": INIT_BYTES,
        "replayed_datagrams": len(replayed),
        "replayed_accepted_messages": len(b.received) - delivered_before,
        "replay_drops": dict(dropped),
        "relay_drops_total": {k: v for k, v in after["statistics"]["dropped"].items() if v},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="current")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--source", type=Path, default=None)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcrelay-bench-") as tmp:
        workdir = Path(tmp)
        key = generate_secure_key_file(workdir / "secure-key")
        flags = ["--secure-key-file", str(workdir / "secure-key")]
        with running_daemon(workdir, options.source, flags) as daemon:
            result = trio.run(run, daemon, key.public, options.seconds, options.rate)
    print(json.dumps(result, indent=2))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[options.label] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
