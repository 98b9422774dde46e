"""The issue's targets, computed from the latest results, each passed or failed."""

from typing import Any

from relaybench import report

CPU_VS_CRYPTO_MAX = 1.15
WORKERS_RATIO_MIN = 1.6
PAST_PEAK_MIN = 0.9
PAST_P99_MAX_MS = 1000.0
RSS_BEYOND_KEY_MAX = 4096.0


def evaluate(sweep: dict[str, Any] | None, scale: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(target: str, where: str, value: float | None, limit: str, ok: bool) -> None:
        rows.append({"target": target, "where": where, "value": value, "limit": limit, "pass": ok})

    for swept in sweep["configs"] if sweep else []:
        peak, loaded = swept["peak"], swept["overload"]
        cpu = peak["cpu_vs_crypto"]
        add(
            "daemon CPU per relayed message at the peak / crypto floor",
            swept["label"],
            cpu,
            f"<= {CPU_VS_CRYPTO_MAX}",
            cpu is not None and cpu <= CPU_VS_CRYPTO_MAX,
        )
        kept = loaded["kept"]
        add(
            "past saturation (offered 2x the peak's delivered rate): delivered / at 1x, medians",
            swept["label"],
            kept,
            f">= {PAST_PEAK_MIN}",
            kept is not None and kept >= PAST_PEAK_MIN,
        )
        p99 = loaded["worst_p99_ms"]
        add(
            "past saturation: p99 latency, ms, worst step",
            swept["label"],
            p99,
            f"< {PAST_P99_MAX_MS:g}",
            p99 is not None and p99 < PAST_P99_MAX_MS,
        )
    for workers in sweep["workers"] if sweep else []:
        add(
            "saturated throughput, 2 crypto workers / 1",
            workers["label"],
            workers["ratio"],
            f">= {WORKERS_RATIO_MIN}",
            workers["ratio"] is not None and workers["ratio"] >= WORKERS_RATIO_MIN,
        )
    for row in scale["scale"] if scale else []:
        beyond = row["rss_bytes_per_client_beyond_key"]
        add(
            "RSS per idle client beyond its key, bytes",
            f"{row['clients']} clients",
            beyond,
            f"< {RSS_BEYOND_KEY_MAX:g}",
            beyond < RSS_BEYOND_KEY_MAX,
        )
    return rows


def markdown(rows: list[dict[str, Any]], sources: dict[str, Any]) -> str:
    lines = [
        "## Targets\n",
        *(f"- {name}: {report.header(result)}" for name, result in sources.items() if result),
        "",
        report.table(
            ["target", "where", "measured", "target", "result"],
            [
                [r["target"], r["where"], r["value"], r["limit"], "pass" if r["pass"] else "FAIL"]
                for r in rows
            ],
        ),
    ]
    return "\n".join(lines)
