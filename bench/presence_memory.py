"""What a mass join of secure members costs the relay in memory (decision 54): loopback
only, bounded.

    .venv/bin/python bench/presence_memory.py                  # N=1,500, A=0.1 then A=8 (~5.5 min)
    .venv/bin/python bench/presence_memory.py --acks 0.1       # one case (~2.7 min)
    .venv/bin/python bench/presence_memory.py --members 300 --seconds 30 --acks channel

Each case runs ``python -m mcrelay daemon`` on 127.0.0.1 (both profiles, API on a Unix
socket in a temporary directory, a fresh secure key, the registration limits lifted as
``hostile_relay.py`` lifts them; the send buffers' bound is the default unless
``--daemon-flag`` says otherwise), reads its RSS idle (no member) after ``IDLE_S``, then
for ``--seconds`` (150) has ``--members`` (1,500) secure clients join it from this
process, at ``--rate`` (80) new INITs a second with at most ``HANDSHAKING`` handshakes
under way, from ``ADDRESSES`` loopback addresses 127.0.1.x. A newcomer is told of every
member and every member of it: n^2 PRESENCE, held by the relay until acknowledged.

The clients are mcrelay's own sans-I/O code (``Initiator``, ``Session``), as
``secure_flood.py`` and ``tests/secure_harness.py`` use them, one non-blocking UDP
socket each, all driven by one ``selectors`` loop. An INIT unanswered for ``RETRY_S``
is sent again (anew: the relay past three quarters of its bound answers a newcomer with
silence, counted ``overloaded``); a COOKIE is answered at once. A client acknowledges
(sends what its session has due) every A seconds, each of ``--acks`` a case, or, for
``channel``, whenever its channel would. Every ``SAMPLE_EVERY_S`` a thread reads the
daemon's VmRSS and VmHWM (/proc/PID/status, the daemon's process alone) and
``/v1/status`` (clients, the secure send buffers' bytes, the drops).

Results go to the terminal (a Markdown table of every case stored under ``--label``)
and bench/results/presence_memory.json. ``--source DIR`` runs the daemon from another
checkout's ``src`` (the code before a change, measured the same way).
"""

import argparse
import heapq
import itertools
import json
import os
import selectors
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from hostile_relay import INTERFACE, Daemon, running_daemon
from relaybench.procfs import process_cpu, raise_nofile

from mcrelay.daemon.secure.keyfile import generate_secure_key_file
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import ProtocolError
from mcrelay.protocol.secure.channel import Role
from mcrelay.protocol.secure.channel_events import MessageDelivered
from mcrelay.protocol.secure.data import peek_data_untrusted
from mcrelay.protocol.secure.handshake import Initiator, tai64n
from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.protocol.secure.session import Session

RESULTS = Path(__file__).parent / "results" / "presence_memory.json"
ADDRESSES = 12
"""Client sources 127.0.1.1 to 127.0.1.12 (the daemon's default allows 256 a host)."""
HANDSHAKING = 20
"""Handshakes under way at most: a newcomer waits while this many have no RESPONSE."""
RETRY_S = 2.0
"""An INIT with no answer this long is sent again (a new one: the page's client)."""
IDLE_S = 3.0
"""The daemon's RSS with no member is read this long after it is ready."""
SAMPLE_EVERY_S = 5.0
TIMELINE_EVERY_S = 15.0
"""The members-over-time table's step (a multiple of SAMPLE_EVERY_S), and its last sample."""
LOOP_TICK_S = 0.005
"""The client loop waits at most this long for a datagram between its other duties."""
MB = 1024 * 1024


@dataclass(slots=True, eq=False)
class Client:
    """One secure client: its socket, its handshake until the RESPONSE, then its session."""

    sock: socket.socket
    static: KeyPair
    initiator: Initiator | None = None
    init_at: float = 0.0
    session: Session | None = None
    wake_at: float = float("inf")
    """When it next sends what its session has due (a heap entry for another time is stale)."""


@dataclass
class Tally:
    inits: int = 0
    retries: int = 0
    cookies: int = 0
    joined: int = 0
    all_in_s: float | None = None
    delivered: int = 0
    """Messages (PRESENCE) delivered to the clients' channels."""
    datagrams_out: int = 0
    send_blocked: int = 0
    """Datagrams the client sockets refused (full): lost, as on a network."""


class Crowd:
    """``members`` clients joining ``relay`` and acknowledging every ``ack_every``
    seconds (None: as their channels would), from one thread and one selector."""

    def __init__(
        self,
        relay: Address,
        relay_public: bytes,
        members: int,
        ack_every: float | None,
        rate: float,
    ) -> None:
        self.relay = relay
        self.relay_public = relay_public
        self.members = members
        self.ack_every = ack_every
        self.rate = rate
        self.selector = selectors.DefaultSelector()
        self.clients: list[Client] = []
        self.handshaking: set[Client] = set()
        self.due: list[tuple[float, int, Client]] = []
        self._order = itertools.count()
        self.tally = Tally()
        self.start = 0.0

    def run(self, seconds: float) -> None:
        self.start = now = time.monotonic()
        end = self.start + seconds
        while now < end:
            timeout = LOOP_TICK_S
            if self.due:
                timeout = min(timeout, max(0.0, self.due[0][0] - now))
            for key, _ in self.selector.select(timeout):
                self._receive(key.data, time.monotonic())
            now = time.monotonic()
            self._join(now)
            while self.due and self.due[0][0] <= now:
                at, _, client = heapq.heappop(self.due)
                if at == client.wake_at:
                    self._flush(client, now)

    def close(self) -> None:
        for client in self.clients:
            self.selector.unregister(client.sock)
            client.sock.close()
        self.selector.close()

    def _join(self, now: float) -> None:
        """Start the newcomers due at ``--rate`` while few enough handshake, and send
        again the INITs unanswered for RETRY_S."""
        for client in self.handshaking:
            if now - client.init_at >= RETRY_S:
                self.tally.retries += 1
                self._send_init(client, None, now)
        started = len(self.clients)
        due = min(self.members, int((now - self.start) * self.rate) + 1)
        while started < due and len(self.handshaking) < HANDSHAKING:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.0.1.{1 + started % ADDRESSES}", 0))
            sock.setblocking(False)
            client = Client(sock, KeyPair.generate())
            self.selector.register(sock, selectors.EVENT_READ, client)
            self.clients.append(client)
            self.handshaking.add(client)
            self._send_init(client, None, now)
            started += 1

    def _send_init(self, client: Client, cookie: bytes | None, now: float) -> None:
        client.initiator = Initiator(
            client.static,
            self.relay_public,
            ephemeral_private=os.urandom(32),
            sender_index=int.from_bytes(os.urandom(4), "little"),
            timestamp=tai64n(time.time_ns()),
            epoch=1,
            cookie=cookie,
        )
        client.init_at = now
        self.tally.inits += 1
        self._send(client, client.initiator.datagram)

    def _send(self, client: Client, data: bytes) -> None:
        try:
            client.sock.sendto(data, self.relay)
        except BlockingIOError:
            self.tally.send_blocked += 1
            return
        self.tally.datagrams_out += 1

    def _receive(self, client: Client, now: float) -> None:
        while True:
            try:
                data = client.sock.recv(65535)
            except BlockingIOError:
                return
            try:
                if client.session is None:
                    self._handshake(client, data, now)
                else:
                    self._deliver(client, client.session, data, now)
            except ProtocolError:
                continue

    def _handshake(self, client: Client, data: bytes, now: float) -> None:
        initiator = client.initiator
        kind = datagram_type_untrusted(data)
        if initiator is None or kind not in (DatagramType.COOKIE, DatagramType.RESPONSE):
            return
        if kind is DatagramType.COOKIE:
            self.tally.cookies += 1
            self._send_init(client, initiator.read_cookie_untrusted(data), now)
            return
        established = initiator.read_response_untrusted(data)
        keypair = Keypair.from_handshake(established.keys, established.relay_epoch, now)
        client.session = Session(Role.CLIENT, keypair, self.relay, now)
        client.initiator = None
        self.handshaking.discard(client)
        self.tally.joined += 1
        if self.tally.joined == self.members:
            self.tally.all_in_s = now - self.start
        self._wake(client, now)  # the confirmation goes at once, whatever the interval

    def _deliver(self, client: Client, session: Session, data: bytes, now: float) -> None:
        if datagram_type_untrusted(data) is not DatagramType.DATA:
            return
        header = peek_data_untrusted(data)
        keypair = session.keypair(header.receiver_index, now)
        if keypair is None:
            return
        session.receive_untrusted(keypair, data, header.counter, self.relay, now)
        while (event := session.channel.next_event()) is not None:
            if isinstance(event, MessageDelivered):
                self.tally.delivered += 1
        if self.ack_every is None:
            self._wake(client, now)

    def _flush(self, client: Client, now: float) -> None:
        session = client.session
        assert session is not None
        for data, _ in session.datagrams(now):
            self._send(client, data)
        if self.ack_every is None:
            self._wake(client, max(session.next_deadline(), now + 0.001), later=True)
        else:
            self._wake(client, now + self.ack_every, later=True)

    def _wake(self, client: Client, at: float, *, later: bool = False) -> None:
        """Send what ``client``'s session has due at ``at``: sooner than planned, or
        (``later``, after it sent) at all."""
        if not later and at >= client.wake_at:
            return
        client.wake_at = at
        if at != float("inf"):  # inf: its session expired, until a datagram comes
            heapq.heappush(self.due, (at, next(self._order), client))


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    rss_mb: float
    peak_rss_mb: float
    joined: int
    """Members in by the clients' count (a RESPONSE read)."""
    clients: int
    """Members in by the relay's count (/v1/status)."""
    send_buffer_mb: float
    overloaded: int
    unreachable: int
    stalled: int
    """Members removed past the crowded mark, over their share and slow to acknowledge."""


def memory_mb(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM (its peak) of ``pid``, in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss, peak = (int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM"))
    return rss, peak


class Sampler(threading.Thread):
    """Every SAMPLE_EVERY_S, the daemon's memory and status (apart from the client loop,
    which a slow answer of a busy daemon must not stall)."""

    def __init__(self, daemon: Daemon, joined: Callable[[], int]) -> None:
        super().__init__(daemon=True)
        self.pid = daemon.process.pid
        self.transport = httpx.HTTPTransport(uds=str(daemon.socket_path))
        self.joined = joined
        self.samples: list[Sample] = []
        self.stopped = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        with httpx.Client(
            transport=self.transport, base_url="http://mcrelay", timeout=30.0
        ) as http:
            tick = 0
            while not self.stopped.is_set():
                self.samples.append(self.sample(http))
                tick += 1
                self.stopped.wait(
                    max(0.0, self.start_time + tick * SAMPLE_EVERY_S - time.monotonic())
                )
            self.samples.append(self.sample(http))

    def sample(self, http: httpx.Client) -> Sample:
        status = http.get("/v1/status").json()
        statistics = status["statistics"]
        rss, peak = memory_mb(self.pid)
        return Sample(
            t_s=round(time.monotonic() - self.start_time, 1),
            rss_mb=round(rss, 1),
            peak_rss_mb=round(peak, 1),
            joined=self.joined(),
            clients=status["clients"],
            send_buffer_mb=round(statistics["profiles"]["secure"]["send_buffer_bytes"] / MB, 2),
            overloaded=statistics["dropped"].get("overloaded", 0),
            unreachable=statistics["dropped"].get("unreachable", 0),
            stalled=statistics["dropped"].get("stalled", 0),
        )


def run_case(
    daemon: Daemon,
    relay_public: bytes,
    members: int,
    ack_every: float | None,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    time.sleep(IDLE_S)
    idle_mb, _ = memory_mb(daemon.process.pid)
    crowd = Crowd((INTERFACE, daemon.port), relay_public, members, ack_every, rate)
    sampler = Sampler(daemon, lambda: crowd.tally.joined)
    sampler.start()
    daemon_cpu, client_cpu = process_cpu(daemon.process.pid), time.process_time()
    try:
        crowd.run(seconds)
    finally:
        sampler.stopped.set()
        sampler.join()
        crowd.close()
    daemon_cpu_s = (process_cpu(daemon.process.pid) - daemon_cpu).total_s
    client_cpu_s = time.process_time() - client_cpu
    samples = sampler.samples
    end = samples[-1]
    return {
        "members": members,
        "ack_every_s": ack_every,
        "rate_per_s": rate,
        "seconds": seconds,
        "idle_rss_mb": round(idle_mb, 1),
        "peak_rss_mb": end.peak_rss_mb,
        "end_rss_mb": end.rss_mb,
        "peak_send_buffer_mb": max(sample.send_buffer_mb for sample in samples),
        "end_send_buffer_mb": end.send_buffer_mb,
        "relay_clients": end.clients,
        "overloaded": end.overloaded,
        "unreachable": end.unreachable,
        "stalled": end.stalled,
        **asdict(crowd.tally),
        "daemon_cpu_s": round(daemon_cpu_s, 1),
        "client_cpu_s": round(client_cpu_s, 1),
        "samples": [asdict(sample) for sample in samples],
    }


def case_name(result: dict[str, Any]) -> str:
    ack = result["ack_every_s"]
    return f"N={result['members']} A={'channel' if ack is None else f'{ack:g}'}"


def tables(cases: dict[str, dict[str, Any]]) -> str:
    """The Markdown tables of ``cases`` (by name): the figures, then members over time."""
    lines = [
        "| case | idle RSS MB | peak RSS MB | end RSS MB | send buffers peak / end MB "
        "| in at end | all in after s | `overloaded` | `unreachable` | `stalled` "
        "| INITs (retries) | CPU s relay / clients |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in cases.items():
        all_in = "-" if r["all_in_s"] is None else f"{r['all_in_s']:.0f}"
        # (not read before the reason existed)
        stalled = "-" if "stalled" not in r else f"{r['stalled']:,}"
        lines.append(
            f"| {name} | {r['idle_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['end_rss_mb']:.0f} "
            f"| {r['peak_send_buffer_mb']:.1f} / {r['end_send_buffer_mb']:.1f} "
            f"| {r['relay_clients']:,} | {all_in} | {r['overloaded']:,} "
            f"| {r['unreachable']:,} | {stalled} | {r['inits']:,} ({r['retries']:,}) "
            f"| {r['daemon_cpu_s']:.0f} / {r['client_cpu_s']:.0f} |"
        )
    step = round(TIMELINE_EVERY_S / SAMPLE_EVERY_S)
    timeline: dict[int, list[str]] = {}
    for index, r in enumerate(cases.values()):
        for sample in r["samples"]:
            tick = round(sample["t_s"] / SAMPLE_EVERY_S)
            if tick % step and sample is not r["samples"][-1]:
                continue
            cells = timeline.setdefault(round(tick * SAMPLE_EVERY_S), [""] * len(cases))
            cells[index] = (
                f"{sample['clients']:,} / {sample['rss_mb']:.0f} / {sample['send_buffer_mb']:.1f}"
            )
    lines += [
        "",
        "| s | " + " | ".join(f"{name}: in / RSS MB / buffers MB" for name in cases) + " |",
        "|---:|" + "---:|" * len(cases),
        *(f"| {at} | " + " | ".join(cells) + " |" for at, cells in sorted(timeline.items())),
    ]
    return "\n".join(lines)


def parse_ack(text: str) -> float | None:
    return None if text == "channel" else float(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=1500)
    parser.add_argument(
        "--acks",
        default="0.1,8",
        help="seconds between a client's sends, or channel; one case each",
    )
    parser.add_argument("--rate", type=float, default=80.0, help="new INITs a second")
    parser.add_argument("--seconds", type=float, default=150.0, help="of joining, each case")
    parser.add_argument("--label", default="current")
    parser.add_argument("--source", type=Path, help="a checkout whose src/ the daemon runs")
    parser.add_argument("--daemon-flag", action="append", default=[], help="passed to the daemon")
    args = parser.parse_args()
    raise_nofile(args.members + 256)
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    cases = stored.setdefault(args.label, {})
    with tempfile.TemporaryDirectory(prefix="mcrelay-bench-") as tmp:
        workdir = Path(tmp)
        key = generate_secure_key_file(workdir / "secure-key")
        flags = ["--secure-key-file", str(workdir / "secure-key"), *args.daemon_flag]
        for ack in args.acks.split(","):
            with running_daemon(workdir, args.source, flags) as daemon:
                result = run_case(
                    daemon, key.public, args.members, parse_ack(ack), args.rate, args.seconds
                )
            cases[case_name(result)] = result
            print(
                f"{args.label} {case_name(result)}: {json.dumps({k: v for k, v in result.items() if k != 'samples'})}",
                flush=True,
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")
    print(tables(cases))


if __name__ == "__main__":
    main()
