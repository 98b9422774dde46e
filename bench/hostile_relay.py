"""The relay under hostile local users (issue 9, items 2, 5 and 7): loopback only, bounded.

    .venv/bin/python bench/hostile_relay.py all             # the three below, about 2 minutes
    .venv/bin/python bench/hostile_relay.py datagrams       # chat beside 30 hostile 64 KB datagrams/s
    .venv/bin/python bench/hostile_relay.py reassembly      # chat while 150 sources hold reassembly
    .venv/bin/python bench/hostile_relay.py posts           # chat while 10 posts of 32 KB run at once

Each case runs ``python -m mcrelay daemon`` on 127.0.0.1 (API on a Unix socket in a
temporary directory) and two real participants in this process, one sending a stamped
message every ``CHAT_INTERVAL_S`` to the other: the figures are how many arrived
within ``LATE_S`` and their latencies. ``--source DIR`` runs the daemon from another
checkout's ``src`` (``PYTHONPATH``), so the code before a change can be measured in
the same run; ``--daemon-flag`` passes a flag to the daemon (for settings only one
side knows). Results go to the terminal and bench/results/hostile_relay.json under
``--label``; bench/README.md keeps them.

- datagrams: 100 event-stream readers attached; 30 datagrams/s of 16,376 empty
  KEEPALIVE TLVs (64 KB) for ``ATTACK_S``, the chat beside them; before that, the
  daemon's CPU per hostile datagram (its whole process, from /proc, under the
  datagrams alone less the same time idle with the readers attached: an upper
  bound on the loop's time).
- reassembly: 150 registered sockets each send 8 first fragments of 2-fragment
  messages that never complete, anew every 4 s (the 4 MiB cap stays full).
- posts: 100 more registered clients; 10 tasks post 32 KB to everyone, again and
  again (each post answered 200 or 503), while the chat runs.
"""

import argparse
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from relaybench.procfs import process_cpu, raise_nofile

from mcrelay.client import MessageReceived, Participant, open_participant
from mcrelay.daemon.legacy.keyfile import generate_key_file
from mcrelay.protocol import legacy
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.fragments import Fragment, encode_fragment

RESULTS = Path(__file__).parent / "results" / "hostile_relay.json"
INTERFACE = "127.0.0.1"
GROUP = "224.1.1.1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CHAT_INTERVAL_S = 0.1
CHAT_MESSAGES = 150
LATE_S = 2.0
"""A chat message that has not arrived this long after it was sent counts as lost."""
ATTACK_S = 15.0
HOSTILE = struct.pack("!HH", 9, 0) * 16376
HOSTILE_PER_S = 30
SUBSCRIBERS = 100
HOLDERS = 150
HOLDER_MESSAGES = 8
HOLD_EVERY_S = 4.0
EXTRA_CLIENTS = 100
POSTERS = 10
POST_BYTES = 32 * 1024
GENEROUS = "1000000"
LIMITS = (
    "--registrations-per-host-burst", GENEROUS,
    "--registrations-per-host-per-s", GENEROUS,
    "--registrations-total-burst", GENEROUS,
    "--registrations-total-per-s", GENEROUS,
    "--max-clients-per-host", GENEROUS,
)  # fmt: skip


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    port: int
    socket_path: Path

    def http(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path))
        return httpx.AsyncClient(transport=transport, base_url="http://mcrelay", timeout=30.0)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((INTERFACE, 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def running_daemon(workdir: Path, source: Path | None, flags: list[str]) -> Iterator[Daemon]:
    key_file = workdir / "relay-key.pem"
    if not key_file.exists():
        generate_key_file(key_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCRELAY_")}
    if source is not None:
        env["PYTHONPATH"] = str(source / "src")
    port, socket_path = free_udp_port(), workdir / f"api-{time.monotonic_ns()}.sock"
    command = [
        sys.executable, "-m", "mcrelay", "daemon", "--interface", INTERFACE,
        "--port", str(port), "--key-file", str(key_file), "--api", f"unix:{socket_path}",
        "--log-level", "warning", *LIMITS, *flags,
    ]  # fmt: skip
    with open(workdir / "daemon.log", "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(socket_path):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start: see {workdir / 'daemon.log'}")
            time.sleep(0.05)
        yield Daemon(process, port, socket_path)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


def _ready(path: Path) -> bool:
    transport = httpx.HTTPTransport(uds=str(path))
    try:
        with httpx.Client(transport=transport, base_url="http://mcrelay", timeout=1.0) as http:
            return http.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Chat:
    sent: int = 0
    latencies_s: list[float] | None = None

    def summary(self) -> dict[str, Any]:
        latencies = sorted(self.latencies_s or [])
        on_time = [x for x in latencies if x <= LATE_S]

        def at(q: float) -> float | None:
            return (
                round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)
                if latencies
                else None
            )

        return {
            "sent": self.sent,
            "delivered": len(on_time),
            "delivered_ratio": round(len(on_time) / self.sent, 3) if self.sent else None,
            "p50_ms": at(0.5),
            "p99_ms": at(0.99),
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        }


@asynccontextmanager
async def chat_pair(
    daemon: Daemon, keys: list[Any]
) -> AsyncIterator[tuple[Participant, Participant]]:
    options: dict[str, Any] = {"destination": (GROUP, daemon.port), "interface": INTERFACE}
    async with (
        open_participant(key=keys[0], **options) as a,
        open_participant(key=keys[1], **options) as b,
    ):
        yield a, b


async def chat(a: Participant, b: Participant, messages: int = CHAT_MESSAGES) -> Chat:
    """``messages`` stamped messages from a to b, one every CHAT_INTERVAL_S."""
    result = Chat(latencies_s=[])
    assert result.latencies_s is not None
    latencies = result.latencies_s

    async def receive() -> None:
        async for event in b.events:
            if isinstance(event, MessageReceived) and event.sender == a.address:
                latencies.append(time.monotonic() - float(event.data.split(b" ")[1]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        for n in range(messages):
            await a.send(f"{n} {time.monotonic():.6f}".encode())
            result.sent += 1
            await trio.sleep(CHAT_INTERVAL_S)
        await trio.sleep(LATE_S)
        nursery.cancel_scope.cancel()
    return result


async def raw_socket() -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind((INTERFACE, 0))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(INTERFACE))
    return sock


async def register(daemon: Daemon, socks: list[trio.socket.SocketType], key: Any) -> None:
    pem = legacy.client_key(key.public_key())
    for sock in socks:
        await sock.sendto(pem, (INTERFACE, daemon.port))
    async with daemon.http() as http:
        with trio.fail_after(30):
            while (await http.get("/v1/status")).json()["clients"] < len(socks):  # noqa: ASYNC110 - polling another process
                await trio.sleep(0.1)


async def case_datagrams(daemon: Daemon, keys: list[Any]) -> dict[str, Any]:
    readers_ready = trio.Event()
    attached: list[int] = []

    async def reader(http: httpx.AsyncClient) -> None:
        async with http.stream("GET", "/v1/events", timeout=None) as response:
            attached.append(response.status_code)
            if len(attached) == SUBSCRIBERS:
                readers_ready.set()
            async for _ in response.aiter_raw():
                pass

    sock = await raw_socket()
    async with (
        chat_pair(daemon, keys) as (a, b),
        daemon.http() as http,
        trio.open_nursery() as nursery,
    ):
        for _ in range(SUBSCRIBERS):
            nursery.start_soon(reader, http)
        with trio.fail_after(30):
            await readers_ready.wait()
        sent = 0

        async def attack() -> None:
            nonlocal sent
            start, first = trio.current_time(), sent
            while trio.current_time() - start < ATTACK_S:
                await sock.sendto(HOSTILE, (INTERFACE, daemon.port))
                sent += 1
                await trio.sleep_until(start + (sent - first) / HOSTILE_PER_S)

        # The daemon's CPU with the readers attached: idle, then under the datagrams alone.
        idle = await cpu_over(daemon, trio.sleep, ATTACK_S)
        alone = await cpu_over(daemon, lambda _: attack(), ATTACK_S)
        per_datagram_ms = (alone - idle) / sent * 1000
        async with trio.open_nursery() as inner:
            inner.start_soon(attack)
            result = await chat(a, b, int(ATTACK_S / CHAT_INTERVAL_S))
        nursery.cancel_scope.cancel()
    sock.close()
    return {
        **result.summary(),
        "subscribers": sum(1 for status in attached if status == 200),
        "hostile_datagrams": sent,
        "daemon_cpu_ms_per_hostile_datagram": round(per_datagram_ms, 3),
    }


async def cpu_over(
    daemon: Daemon, work: Callable[[float], Awaitable[None]], seconds: float
) -> float:
    """The daemon's CPU seconds (all its threads) while ``work(seconds)`` runs."""
    before = process_cpu(daemon.process.pid)
    await work(seconds)
    return (process_cpu(daemon.process.pid) - before).total_s


async def case_reassembly(daemon: Daemon, keys: list[Any]) -> dict[str, Any]:
    holders = [await raw_socket() for _ in range(HOLDERS)]
    await register(daemon, holders, keys[2])

    async def hold() -> None:
        round_ = 0
        while True:
            for index, sock in enumerate(holders):
                for msg in range(HOLDER_MESSAGES):
                    msg_id = struct.pack("!HBB", round_, msg, index % 256)
                    fragment = encode_fragment(Fragment(msg_id, 0, 2, secrets.token_bytes(8)))
                    await sock.sendto(fragment, (INTERFACE, daemon.port))
            round_ += 1
            await trio.sleep(HOLD_EVERY_S)

    async with chat_pair(daemon, keys) as (a, b), trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await trio.sleep(1.0)
        result = await chat(a, b)
        nursery.cancel_scope.cancel()
    async with daemon.http() as http:
        dropped = (await http.get("/v1/status")).json()["statistics"]["dropped"]
    for sock in holders:
        sock.close()
    return {**result.summary(), "dropped": {k: v for k, v in dropped.items() if v}}


async def case_posts(daemon: Daemon, keys: list[Any]) -> dict[str, Any]:
    extra = [await raw_socket() for _ in range(EXTRA_CLIENTS)]
    await register(daemon, extra, keys[2])
    answers: dict[int, int] = {}
    text = "p" * POST_BYTES

    async def poster(http: httpx.AsyncClient) -> None:
        while True:
            response = await http.post("/v1/messages", json={"text": text})
            answers[response.status_code] = answers.get(response.status_code, 0) + 1
            if response.status_code == 503:
                await trio.sleep(float(response.headers.get("Retry-After", "1")))

    async with (
        chat_pair(daemon, keys) as (a, b),
        daemon.http() as http,
        trio.open_nursery() as nursery,
    ):
        for _ in range(POSTERS):
            nursery.start_soon(poster, http)
        result = await chat(a, b, 60)
        nursery.cancel_scope.cancel()
    for sock in extra:
        sock.close()
    return {**result.summary(), "post_answers": answers}


CASES: dict[str, Callable[[Daemon, list[Any]], Awaitable[dict[str, Any]]]] = {
    "datagrams": case_datagrams,
    "reassembly": case_reassembly,
    "posts": case_posts,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("case", choices=[*CASES, "all"])
    parser.add_argument("--label", default="after")
    parser.add_argument("--source", type=Path, help="a checkout whose src/ the daemon runs")
    parser.add_argument("--daemon-flag", action="append", default=[], help="passed to the daemon")
    args = parser.parse_args()
    raise_nofile(4096)
    keys = [crypto.generate_private_key() for _ in range(3)]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as name:
        for case in CASES if args.case == "all" else [args.case]:
            with running_daemon(Path(name), args.source, args.daemon_flag) as daemon:
                results[case] = trio.run(CASES[case], daemon, keys)
            print(f"{args.label} {case}: {json.dumps(results[case])}", flush=True)
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    stored.setdefault(args.label, {}).update(results)
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")


if __name__ == "__main__":
    main()
