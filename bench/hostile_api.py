"""The control API under hostile use (issue 9, items 1, 2 and 4): loopback only, bounded.

    .venv/bin/python bench/hostile_api.py all           # the three below, about a minute
    .venv/bin/python bench/hostile_api.py events        # loop time of a datagram of 16,376 drops
    .venv/bin/python bench/hostile_api.py subscribers   # RSS and chat latency, 2,000 subscribers
    .venv/bin/python bench/hostile_api.py shutdown      # SIGTERM to exit with a stalled reader

``events`` runs a relay in this process (API off) with 0, 10 and 100 subscriber
tasks that read their events and encode each as the API does, and times, per
hostile datagram, ``Relay.handle_datagram`` plus the subscribers' work until every
queue is empty (median and max of the samples). ``subscribers`` and ``shutdown``
run ``python -m mcrelay daemon`` (see relaybench/daemon.py). The figures go to
the terminal and to bench/results/hostile_api.json under ``--label`` (``before``:
the code before issue 9; ``after``); bench/README.md keeps them.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import trio
from relaybench.daemon import INTERFACE, Daemon, running_daemon
from relaybench.procfs import raise_nofile, rss_bytes

from mcrelay.api.events import sse_frame
from mcrelay.client import MessageReceived, open_participant
from mcrelay.core.events import EventHub, Subscription
from mcrelay.daemon.legacy.keyfile import generate_key_file
from mcrelay.protocol.legacy import crypto
from mcrelay.service import serve
from mcrelay.settings.config import RelayConfig

RESULTS = Path(__file__).parent / "results" / "hostile_api.json"
HOSTILE = struct.pack("!HH", 9, 0) * 16376
"""64 KB of TLVs of a type the relay drops one by one: 16,376 drops."""
SOURCE = ("127.0.0.9", 40000)
SUBSCRIBER_COUNTS = (0, 10, 100)
EVENT_SAMPLES = 30
EVENT_CASE_LIMIT_S = 30.0
FLOOD_CONNECTIONS = 2000
CHAT_MESSAGES = 60
CHAT_INTERVAL_S = 0.05
STALL_POSTS = 2000
EXIT_LIMIT_S = 20.0
"""How long the shutdown case waits for the daemon to exit before it kills it."""
SECOND_SIGNAL_S = 0.5
"""The second case sends a second SIGTERM this long after the first, if it still runs."""


# events: the loop time of one hostile datagram, with subscribers attached.


async def _subscriber(hub: EventHub, subscriptions: list[Subscription]) -> None:
    with hub.subscribe() as subscription:
        subscriptions.append(subscription)
        async for event in subscription:
            sse_frame(event)


def _flush(hub: EventHub) -> None:
    """Publish the drops the hub aggregates now, not at its interval's end (the code before
    issue 9 published every drop at once and has nothing to flush)."""
    flush: Callable[[], None] | None = getattr(hub, "flush_drops", None)
    if flush is not None:
        flush()


async def _drained(subscriptions: list[Subscription]) -> None:
    """Every subscriber waits for its next event: what the datagram caused is done."""
    while not all(s.receive_channel.statistics().tasks_waiting_receive for s in subscriptions):
        await trio.lowlevel.checkpoint()


async def _event_case(key_file: Path, subscribers: int) -> dict[str, Any]:
    config = RelayConfig(port=0, interface=INTERFACE, key_file=key_file, api="off")
    times: list[float] = []
    async with trio.open_nursery() as nursery:
        daemon = await nursery.start(serve, config)
        relay = daemon.relay
        subscriptions: list[Subscription] = []
        for _ in range(subscribers):
            nursery.start_soon(_subscriber, relay.events, subscriptions)
        while len(subscriptions) < subscribers:
            await trio.lowlevel.checkpoint()
        await _drained(subscriptions)
        deadline = time.perf_counter() + EVENT_CASE_LIMIT_S
        while len(times) < EVENT_SAMPLES and time.perf_counter() < deadline:
            started = time.perf_counter()
            relay.handle_datagram(HOSTILE, SOURCE, trio.current_time())
            _flush(relay.events)
            await _drained(subscriptions)
            times.append(time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return {
        "subscribers": subscribers,
        "samples": len(times),
        "median_ms": round(statistics.median(times) * 1000, 2),
        "max_ms": round(max(times) * 1000, 2),
    }


def run_events(workdir: Path) -> list[dict[str, Any]]:
    key_file = workdir / "events-key.pem"
    generate_key_file(key_file)
    rows = [trio.run(_event_case, key_file, count) for count in SUBSCRIBER_COUNTS]
    for row in rows:
        print(
            f"events: {row['subscribers']:>3} subscribers: {row['median_ms']} ms median, "
            f"{row['max_ms']} ms max per hostile datagram ({row['samples']} samples)"
        )
    return rows


# subscribers: what 2,000 attempted subscribers cost the daemon and legit chat.


async def _chat(port: int) -> list[float]:
    """Latency (send to delivery) of messages between two participants, in seconds."""
    keys = [await trio.to_thread.run_sync(crypto.generate_private_key) for _ in range(2)]
    latencies: list[float] = []
    options: dict[str, Any] = {"destination": (INTERFACE, port), "interface": INTERFACE}
    async with (
        open_participant(key=keys[0], **options) as a,
        open_participant(key=keys[1], **options) as b,
    ):
        for n in range(CHAT_MESSAGES):
            text = f"chat {n}".encode()
            started = time.perf_counter()
            await a.send(text)
            with trio.fail_after(10):
                while True:
                    event = await b.events.receive()
                    if isinstance(event, MessageReceived) and event.data == text:
                        break
            latencies.append(time.perf_counter() - started)
            await trio.sleep(CHAT_INTERVAL_S)
    return latencies


def _chat_figures(port: int) -> dict[str, float]:
    latencies = trio.run(_chat, port)
    return {
        "chat_median_ms": round(statistics.median(latencies) * 1000, 2),
        "chat_max_ms": round(max(latencies) * 1000, 2),
    }


def _flood(api_port: int, stack: ExitStack) -> list[socket.socket]:
    """FLOOD_CONNECTIONS connections that each ask for the event stream and never read."""
    request = b"GET /v1/events HTTP/1.1\r\nHost: mcrelay\r\nAccept: text/event-stream\r\n\r\n"
    opened: list[socket.socket] = []
    for _ in range(FLOOD_CONNECTIONS):
        sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.settimeout(2.0)
        try:
            sock.connect((INTERFACE, api_port))
            sock.sendall(request)
        except OSError:
            continue
        opened.append(sock)
    return opened


def _answers(sockets: list[socket.socket]) -> dict[str, int]:
    """How each flood connection was answered: 200 (subscribed), 503, or closed."""
    tally: dict[str, int] = {}
    for sock in sockets:
        sock.settimeout(0.05)
        try:
            head = sock.recv(16)
        except TimeoutError:
            head = b"(no answer yet)"
        except OSError:
            head = b""
        kind = (
            head[9:12].decode()
            if head.startswith(b"HTTP/1.1 ")
            else ("closed" if not head else "no answer")
        )
        tally[kind] = tally.get(kind, 0) + 1
    return tally


def run_subscribers(workdir: Path) -> dict[str, Any]:
    raise_nofile(FLOOD_CONNECTIONS + 256)
    key_file = workdir / "subscribers-key.pem"
    generate_key_file(key_file)
    with running_daemon(workdir, key_file) as daemon:
        time.sleep(0.5)
        before = {"rss_mb": round(rss_bytes(daemon.pid) / 2**20, 1), **_chat_figures(daemon.port)}
        api_port = _api_port(daemon)
        with ExitStack() as stack:
            started = time.perf_counter()
            flood = _flood(api_port, stack)
            opened_s = time.perf_counter() - started
            time.sleep(1.0)
            answers = _answers(flood)
            during = {
                "rss_mb": round(rss_bytes(daemon.pid) / 2**20, 1),
                **_chat_figures(daemon.port),
            }
        alive = daemon.process.poll() is None
    row = {
        "attempted": FLOOD_CONNECTIONS,
        "connected": len(flood),
        "open_s": round(opened_s, 2),
        "answers": answers,
        "before": before,
        "during": during,
        "daemon_alive": alive,
    }
    print(f"subscribers: {json.dumps(row)}")
    return row


def _api_port(daemon: Daemon) -> int:
    command = daemon.process.args
    assert isinstance(command, list)
    return int(str(command[command.index("--api") + 1]).rsplit(":", 1)[1])


# shutdown: SIGTERM with a reader that stopped reading.


def _stalled_reader(api_port: int, stack: ExitStack) -> socket.socket:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((INTERFACE, api_port))
    sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: mcrelay\r\n\r\n")
    return sock


def _stop_case(workdir: Path, key_file: Path, signals: int) -> dict[str, Any]:
    with running_daemon(workdir, key_file) as daemon, ExitStack() as stack:
        api_port = _api_port(daemon)
        _stalled_reader(api_port, stack)
        with httpx.Client(base_url=f"http://{INTERFACE}:{api_port}", timeout=5.0) as http:
            posted = 0
            for n in range(STALL_POSTS):
                try:
                    http.post("/v1/messages", json={"text": f"event {n}"})
                except httpx.TransportError:
                    break
                posted += 1
        started = time.perf_counter()
        os.kill(daemon.pid, signal.SIGTERM)
        code: int | str
        try:
            if signals == 2:
                try:
                    daemon.process.wait(SECOND_SIGNAL_S)
                except subprocess.TimeoutExpired:
                    os.kill(daemon.pid, signal.SIGTERM)
            code = daemon.process.wait(EXIT_LIMIT_S)
        except subprocess.TimeoutExpired:
            code = f"still running after {EXIT_LIMIT_S:g} s (killed)"
        row = {
            "signals": signals,
            "events_posted": posted,
            "exit": code,
            "exit_s": round(time.perf_counter() - started, 2),
        }
    print(f"shutdown: {json.dumps(row)}")
    return row


def run_shutdown(workdir: Path) -> list[dict[str, Any]]:
    key_file = workdir / "shutdown-key.pem"
    generate_key_file(key_file)
    return [_stop_case(workdir, key_file, signals) for signals in (1, 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("events", "subscribers", "shutdown", "all"))
    parser.add_argument(
        "--label", default="after", help="the key of the results file to write (default: after)"
    )
    args = parser.parse_args()
    everything: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results: dict[str, Any] = everything.setdefault(args.label, {})
    results["head"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="mcrelay-hostile-") as tmp:
        workdir = Path(tmp)
        if args.what in ("events", "all"):
            results["events"] = run_events(workdir)
        if args.what in ("subscribers", "all"):
            results["subscribers"] = run_subscribers(workdir)
        if args.what in ("shutdown", "all"):
            results["shutdown"] = run_shutdown(workdir)
    RESULTS.write_text(json.dumps(everything, indent=2) + "\n")


if __name__ == "__main__":
    main()
