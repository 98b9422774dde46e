"""Scale: thousands of registered idle clients; memory, the cleanup task, the client list.

For each N, on a fresh daemon whose settings file says ``client_timeout = 600``:
1. RSS and CPU of the daemon idle with no client;
2. N idle clients register, each with a key of its own, from a few processes,
   in chunks (the next chunk once the relay lists the last), for at most
   ``register_limit_s``. Each join is announced to every client (O(N^2)
   notices); what the relay could not send or queue is counted
   (``send_queue_full``). A registration cut short by the limit is reported
   as such, and what follows is measured with the clients that got in;
3. every client sends one KEEPALIVE, then RSS and CPU with N idle clients:
   the RSS growth per client, and the cleanup task's cost (CPU beyond idle);
4. ``GET /v1/clients`` latency, default page and a page of 10,000;
5. the settings file gets ``client_timeout = 1`` and the daemon SIGHUP: all N
   clients are over their timeout at once. Time and CPU until none is listed.
"""

import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from relaybench import idle, keymem, report
from relaybench.api import Api
from relaybench.daemon import running_daemon
from relaybench.keys import BenchKeys
from relaybench.procfs import process_cpu, rss_bytes
from relaybench.stats import percentile
from relaybench.workers import Worker, call_all, stop_all

HOST = "127.0.0.1"
IDLE_TIMEOUT_S = 600.0
"""The clients' timeout while they register and idle: none expires before it is asked to."""
EXPIRE_TIMEOUT_S = 1.0
STALL_S = 3.0
"""A chunk that makes no progress this long is sent again (a refresh for those already in)."""
QUEUE_LIMIT_S = 60.0
EXPIRY_LIMIT_S = 90.0
POLL_S = 0.1
LARGE_PAGE = 10000


@dataclass(frozen=True)
class ScaleOptions:
    clients: tuple[int, ...] = (1000, 10000)
    register_limit_s: float = 90.0
    chunk: int = 500
    idle_s: float = 4.0
    sockets_per_process: int = 2500
    send_per_s: float = 2000.0
    """Datagrams a second each idle-client process sends (registrations, keep-alives)."""
    default_page_requests: int = 30
    large_page_requests: int = 5
    key_samples: int = 2000


def run(keys: BenchKeys, workdir: Path, options: ScaleOptions) -> dict[str, Any]:
    started = time.monotonic()
    key_worker = Worker("key-memory", keymem.main, options.key_samples)
    try:
        key = key_worker.reply()
    finally:
        key_worker.stop()
    rows = [one(keys, workdir, n, options, key["rss_bytes_per_key"]) for n in options.clients]
    result = {**report.envelope("scale", asdict(options), started), "key": key, "scale": rows}
    result["total_s"] = time.monotonic() - started
    return result


def idle_cpu(pid: int, seconds: float) -> dict[str, float]:
    before = process_cpu(pid)
    time.sleep(seconds)
    cpu = process_cpu(pid) - before
    return {"cores": cpu.total_s / seconds, "main_cores": cpu.main_s / seconds}


def settings_file(workdir: Path, client_timeout_s: float) -> Path:
    path = workdir / "scale.toml"
    path.write_text(f"[relay]\nclient_timeout = {client_timeout_s}\n")
    return path


def one(
    keys: BenchKeys, workdir: Path, n: int, options: ScaleOptions, key_bytes: float
) -> dict[str, Any]:
    config = settings_file(workdir, IDLE_TIMEOUT_S)
    with running_daemon(workdir, keys.key_file, ["--config", str(config)]) as daemon:
        api, pid = daemon.api, daemon.pid
        api.status()
        rss_empty = rss_bytes(pid)
        cpu_empty = idle_cpu(pid, options.idle_s)
        count = -(-n // options.sockets_per_process)
        shares = [n // count + (i < n % count) for i in range(count)]
        workers = [
            Worker(
                f"idle-{i}",
                idle.main,
                idle.IdleSpec(share, HOST, daemon.address, options.send_per_s),
            )
            for i, share in enumerate(shares)
        ]
        try:
            for worker in workers:
                worker.reply()
            began, cpu_before = time.monotonic(), process_cpu(pid)
            registration = register(workers, shares, api, options)
            registration["seconds"] = time.monotonic() - began
            wait_queue_empty(api)
            registration["until_queue_empty_s"] = time.monotonic() - began
            registration["cpu_s"] = (process_cpu(pid) - cpu_before).total_s
            counters = api.statistics()
            call_all(workers, "keepalive")
            registered = api.client_count()
            rss_full = rss_bytes(pid)
            cpu_full = idle_cpu(pid, options.idle_s)
            listing = list_latency(api, options)
            settings_file(workdir, EXPIRE_TIMEOUT_S)
            expiry = measure_expiry(api, pid, registered, cpu_full["cores"])
        finally:
            stop_all(workers)
    per_client = (rss_full - rss_empty) / registered if registered else None
    return {
        "clients": n,
        "registered": registered,
        "processes": count,
        "rss_empty_bytes": rss_empty,
        "rss_full_bytes": rss_full,
        "rss_bytes_per_client": per_client,
        "rss_bytes_per_client_beyond_key": None if per_client is None else per_client - key_bytes,
        "idle_empty": cpu_empty,
        "idle_full": cpu_full,
        "cleanup_cores": cpu_full["cores"] - cpu_empty["cores"],
        "registration": registration,
        "registration_drops": {k: v for k, v in counters["dropped"].items() if v},
        "registration_datagrams_out": counters["datagrams_out"],
        "listing": listing,
        "expiry": expiry,
    }


def register(
    workers: list[Worker], shares: list[int], api: Api, options: ScaleOptions
) -> dict[str, Any]:
    """Register in chunks, each once the relay lists the previous one, until done or the limit."""
    deadline = time.monotonic() + options.register_limit_s
    step = max(1, options.chunk // len(workers))
    resends = registered = 0
    for low in range(0, max(shares), step):
        target = sum(min(low + step, share) for share in shares)
        call_all(workers, "register", low, low + step)
        changed = time.monotonic()
        while (count := api.client_count()) < target:
            now = time.monotonic()
            if now > deadline:
                return {"complete": False, "registered": count, "resends": resends}
            if count != registered:
                registered, changed = count, now
            elif now - changed > STALL_S:
                call_all(workers, "register", low, low + step)
                resends, changed = resends + 1, time.monotonic()
            time.sleep(POLL_S)
        registered = count
    return {"complete": True, "registered": registered, "resends": resends}


def wait_queue_empty(api: Api) -> None:
    """Until the relay has sent (or dropped) every notice the registrations queued."""
    deadline = time.monotonic() + QUEUE_LIMIT_S
    while api.statistics()["send_queue"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relay's send queue is not empty after {QUEUE_LIMIT_S:g} s")
        time.sleep(POLL_S)


def list_latency(api: Api, options: ScaleOptions) -> dict[str, Any]:
    pages: dict[str, Any] = {}
    for name, limit, requests in (
        ("default", None, options.default_page_requests),
        ("large", LARGE_PAGE, options.large_page_requests),
    ):
        timed = [api.timed_clients(limit) for _ in range(requests)]
        seconds = [s for s, _listed in timed]
        pages[name] = {
            "limit": limit,
            "requests": requests,
            "listed": timed[-1][1] if timed else 0,
            "p50_ms": 1e3 * (percentile(seconds, 0.5) or 0.0),
            "p99_ms": 1e3 * (percentile(seconds, 0.99) or 0.0),
        }
    return pages


def measure_expiry(api: Api, pid: int, n: int, idle_cores: float) -> dict[str, Any]:
    """SIGHUP (the settings file now says 1 s): every client is over it; until none is listed."""
    began, cpu_before = time.monotonic(), process_cpu(pid)
    os.kill(pid, signal.SIGHUP)
    first_gone: float | None = None
    deadline = began + EXPIRY_LIMIT_S
    while (count := api.client_count()) > 0 and time.monotonic() < deadline:
        if count < n and first_gone is None:
            first_gone = time.monotonic()
        time.sleep(POLL_S)
    ended = time.monotonic()
    cpu = (process_cpu(pid) - cpu_before).total_s
    beyond = cpu - idle_cores * (ended - began)
    return {
        "left": count,
        "first_gone_s": None if first_gone is None else first_gone - began,
        "all_gone_s": ended - began if count == 0 else None,
        "cpu_s": cpu,
        "cpu_beyond_idle_s": beyond,
        "cpu_us_per_client": 1e6 * beyond / (n - count) if n > count else None,
    }


HEADERS = [
    "clients", "registered", "registration s", "RSS empty MiB", "RSS full MiB", "RSS/client B",
    "beyond key B", "registration drops", "idle cores (0 clients)", "idle cores (N)",
    "cleanup cores", "list p50 ms", "list p99 ms", "list 10k p50 ms", "list 10k p99 ms",
    "expire all, s", "expiry CPU s", "expiry us/client",
]  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for row in result["scale"]:
        listing, expiry = row["listing"], row["expiry"]
        registration = row["registration"]
        registered = f"{row['registered']}" + ("" if registration["complete"] else " (cut short)")
        rows.append([
            row["clients"], registered, registration["seconds"],
            row["rss_empty_bytes"] / 2**20, row["rss_full_bytes"] / 2**20,
            row["rss_bytes_per_client"], row["rss_bytes_per_client_beyond_key"],
            report.drops({"dropped": row["registration_drops"]}),
            row["idle_empty"]["cores"], row["idle_full"]["cores"], row["cleanup_cores"],
            listing["default"]["p50_ms"], listing["default"]["p99_ms"],
            listing["large"]["p50_ms"], listing["large"]["p99_ms"],
            expiry["all_gone_s"] if expiry["left"] == 0 else f"{expiry['left']} left", expiry["cpu_beyond_idle_s"],
            expiry["cpu_us_per_client"],
        ])  # fmt: skip
    key = result["key"]
    return (
        f"## Scale: idle registered clients\n\n{report.header(result)}\n\n"
        f"One loaded RSA-2048 public key: {key['rss_bytes_per_key']:.0f} B of RSS "
        f"({key['keys']} keys in a fresh process).\n\n" + report.table(HEADERS, rows)
    )
