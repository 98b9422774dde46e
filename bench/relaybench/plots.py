"""PNG plots of the sweep, the fan-out and the scale results (matplotlib, the ``bench`` extra)."""

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from relaybench.report import RESULTS


def sweep(result: dict[str, Any]) -> Path:
    figure, (rate, latency, cpu) = plt.subplots(1, 3, figsize=(16, 4.8))
    top = 0.0
    for swept in result["configs"]:
        steps, past = swept["steps"], swept["overload"]["at_twice"]
        offered = [s["offered_per_s"] for s in steps]
        top = max(top, *offered, *(s["offered_per_s"] for s in past))
        for axes, key in (
            (rate, "delivered_per_s"),
            (latency, "latency_p99_ms"),
            (cpu, "cpu_vs_crypto"),
        ):
            values = [_value(s[key]) for s in steps]
            (line,) = axes.plot(offered, values, "o-", label=swept["label"])
            axes.plot(
                [s["offered_per_s"] for s in past],
                [_value(s[key]) for s in past],
                "*",
                markersize=12,
                color=line.get_color(),
            )
    rate.plot([0, top], [0, top], ":", color="grey", label="delivered = offered (star: 2x peak)")
    rate.set(xlabel="offered messages/s", ylabel="delivered messages/s", title="Throughput")
    latency.axhline(1000, ls=":", color="red", label="1 s")
    latency.set(
        xlabel="offered messages/s",
        ylabel="p99 latency, ms",
        title="Latency (sampled)",
        yscale="log",
    )
    cpu.axhline(1.15, ls=":", color="red", label="target 1.15")
    cpu.set(
        xlabel="offered messages/s",
        ylabel="daemon CPU / crypto floor",
        title="CPU per relayed message",
    )
    for axes in (rate, latency, cpu):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return _save(figure, "sweep")


def fanout(result: dict[str, Any]) -> Path:
    rows = result["fan_outs"]
    n = [row["receivers"] for row in rows]
    figure, (per_message, per_copy) = plt.subplots(1, 2, figsize=(11, 4.5))
    per_message.plot(n, [row["step"]["relay_cpu_ms_per_msg"] for row in rows], "o-", label="daemon")
    per_message.plot(
        n, [row["crypto_floor"]["cpu_ms_per_msg"] for row in rows], "s--", label="crypto floor"
    )
    per_message.plot(
        n, [row["bare_floor"]["cpu_ms_per_msg"] for row in rows], "^:", label="bare floor"
    )
    per_message.set(
        xscale="log",
        yscale="log",
        xlabel="receivers",
        ylabel="CPU ms per message",
        title="Per message",
    )
    per_copy.plot(n, [row["cpu_ms_per_copy"] for row in rows], "o-", label="daemon")
    per_copy.plot(n, [row["crypto_floor_ms_per_copy"] for row in rows], "s--", label="crypto floor")
    per_copy.set(
        xscale="log", xlabel="receivers", ylabel="CPU ms per delivered copy", title="Per copy"
    )
    for axes in (per_message, per_copy):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return _save(figure, "fanout")


def scale(result: dict[str, Any]) -> Path:
    rows = result["scale"]
    labels = [
        f"{row['registered']} of {row['clients']}"
        if row["registered"] < row["clients"]
        else str(row["clients"])
        for row in rows
    ]
    figure, (memory, timing) = plt.subplots(1, 2, figsize=(11, 4.5))
    key = result["key"]["rss_bytes_per_key"]
    memory.bar(labels, [key] * len(rows), label="one loaded public key")
    memory.bar(
        labels,
        [row["rss_bytes_per_client_beyond_key"] or 0.0 for row in rows],
        bottom=[key] * len(rows),
        label="beyond the key",
    )
    memory.axhline(key + 4096, ls=":", color="red", label="key + 4 KiB (target)")
    memory.set(
        xlabel="idle clients registered",
        ylabel="daemon RSS bytes per client",
        title="Memory per client",
    )
    x = list(range(len(rows)))
    timing.bar(
        [i - 0.2 for i in x],
        [row["registration"]["seconds"] for row in rows],
        0.4,
        label="register all",
    )
    timing.bar(
        [i + 0.2 for i in x],
        [row["expiry"]["all_gone_s"] or 0.0 for row in rows],
        0.4,
        label="expire all",
    )
    timing.set_xticks(x, labels)
    timing.set(
        xlabel="idle clients registered",
        ylabel="seconds",
        yscale="log",
        title="Registering and expiring",
    )
    for axes in (memory, timing):
        axes.grid(alpha=0.3, axis="y")
        axes.legend(fontsize=8)
    return _save(figure, "scale")


def _value(value: float | None) -> float:
    """A figure to plot: a missing one (no latency sample, say) leaves a gap."""
    return math.nan if value is None else value


def _save(figure: Any, name: str) -> Path:
    path = RESULTS / f"{name}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
