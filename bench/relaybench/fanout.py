"""Fan-out: one sender, N receivers, a fixed rate below saturation; CPU per message and copy.

Each N gets its crypto floor (one decrypt and N encrypts per message), the bare
floor at the same rate, and a fresh daemon. Registering N receivers makes the
relay send O(N^2) join notices; those it could not queue are counted
(``send_queue_full``) and reported apart from the step's own drops.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from relaybench import floors, report
from relaybench.daemon import running_daemon
from relaybench.keys import BenchKeys
from relaybench.load import open_fleet
from relaybench.stats import ratio

FAN_OUTS = (1, 10, 100, 500)
SIZE = 100
RATE_PER_S = 50.0
RATE_FRACTION = 0.25
"""The rate is at most this fraction of the crypto floor's rate for the fan-out."""


@dataclass(frozen=True)
class FanoutOptions:
    fan_outs: tuple[int, ...] = FAN_OUTS
    rate_per_s: float = RATE_PER_S
    step_s: float = 4.0
    floor_s: float = 1.5
    receiver_processes: int = 2


def run(keys: BenchKeys, workdir: Path, options: FanoutOptions) -> dict[str, Any]:
    started = time.monotonic()
    rows = [one(keys, workdir, n, options) for n in options.fan_outs]
    result = {**report.envelope("fanout", asdict(options), started), "fan_outs": rows}
    result["total_s"] = time.monotonic() - started
    return result


def one(keys: BenchKeys, workdir: Path, n: int, options: FanoutOptions) -> dict[str, Any]:
    def crypto_floor() -> floors.CryptoFloor:
        return floors.crypto_floor(keys.relay, keys.client.public_key(), 1, n, options.floor_s)

    before = crypto_floor()
    rate = min(options.rate_per_s, RATE_FRACTION * before.msgs_per_s)
    bare = floors.bare_floor(keys, 1, n, SIZE, rate, options.step_s, options.receiver_processes)
    with (
        running_daemon(workdir, keys.key_file) as daemon,
        open_fleet(daemon.address, keys, 1, n, options.receiver_processes, daemon.api) as fleet,
    ):
        registration = daemon.api.statistics()
        step = fleet.step(daemon.pid, daemon.api, 1, rate, options.step_s, SIZE)
    crypto = floors.pooled([before, crypto_floor()])
    counters = step["counters"]
    copies_sent = counters["copies_sent"] if counters else 0
    return {
        "receivers": n,
        "rate_per_s": rate,
        "crypto_floor": crypto.as_dict(),
        "bare_floor": bare,
        "registration_drops": {k: v for k, v in registration["dropped"].items() if v},
        "step": step,
        "cpu_ms_per_copy": 1e3 * step["relay_cpu_s"] / copies_sent if copies_sent else None,
        "crypto_floor_ms_per_copy": crypto.cpu_ms_per_msg / n,
        "cpu_vs_crypto": ratio(step["relay_cpu_ms_per_msg"], crypto.cpu_ms_per_msg),
        "cpu_vs_bare": ratio(step["relay_cpu_ms_per_msg"], bare["cpu_ms_per_msg"]),
    }


HEADERS = [
    "receivers", "rate/s", "delivered/s", "loss", "p50 ms", "p99 ms", "CPU ms/msg", "main",
    "workers", "CPU ms/copy", "floor ms/msg", "floor ms/copy", "x crypto", "bare ms/msg",
    "x bare", "step drops", "registration drops",
]  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for row in result["fan_outs"]:
        step = row["step"]
        rows.append([
            row["receivers"], row["rate_per_s"], step["delivered_per_s"], report.pct(step["loss"]),
            step["latency_p50_ms"], step["latency_p99_ms"], step["relay_cpu_ms_per_msg"],
            step["relay_main_ms_per_msg"], step["relay_others_ms_per_msg"],
            row["cpu_ms_per_copy"], row["crypto_floor"]["cpu_ms_per_msg"],
            row["crypto_floor_ms_per_copy"], row["cpu_vs_crypto"],
            row["bare_floor"]["cpu_ms_per_msg"], row["cpu_vs_bare"],
            report.drops(step["counters"]),
            report.drops({"dropped": row["registration_drops"]}),
        ])  # fmt: skip
    return (
        f"## Fan-out: 1 sender, {SIZE}-byte messages\n\n{report.header(result)}\n\n"
        + report.table(HEADERS, rows)
    )
