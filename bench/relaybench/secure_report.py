"""The tables of ``run.py secure`` (:mod:`relaybench.secure`): the summary, the ratios,
the two profiles' ladders side by side, each ladder, and the fan-out."""

from typing import Any

from relaybench import report

PROFILES = ("legacy", "secure")


def markdown(result: dict[str, Any]) -> str:
    parts = [f"## The secure profile beside the legacy one\n\n{report.header(result)}\n"]
    summary = []
    for compared in result["configs"]:
        for name, measured in compared["profiles"].items():
            median, bare = measured["median"], measured["bare_floor"]
            summary.append([
                compared["label"], name, measured["lossless_rate"],
                f"{measured['repeats_lossless']} of {len(measured['repeats'])}",
                measured["median_of"],
                median["delivered_per_s"], median["latency_p50_ms"], median["latency_p99_ms"],
                median["relay_cpu_ms_per_msg"], median["relay_main_ms_per_msg"],
                median["relay_others_ms_per_msg"], bare["cpu_ms_per_msg"], measured["cpu_vs_bare"],
                median["relay_cores"], median["load_cores"], median["other_cores"],
            ])  # fmt: skip
    parts.append(report.table(SUMMARY_HEADERS, summary) + "\n")
    ratios = [
        [c["label"], c["lossless_ratio"], c["cpu_ratio"],
         c["profiles"]["secure"]["cpu_vs_bare"], c["profiles"]["legacy"]["cpu_vs_bare"]]
        for c in result["configs"]
    ]  # fmt: skip
    parts.append(report.table(RATIO_HEADERS, ratios) + "\n")
    for compared in result["configs"]:
        parts.append(
            f"### {compared['label']}: the ladders side by side\n\n"
            + report.table(SIDE_HEADERS, side_by_side(compared["profiles"]))
            + "\n"
        )
    for compared in result["configs"]:
        for name, measured in compared["profiles"].items():
            rows = [step_row(step) for step in measured["steps"]]
            rows += [step_row(step, "repeat") for step in measured["repeats"]]
            parts.append(
                f"### {compared['label']}, {name}\n\n" + report.table(STEP_HEADERS, rows) + "\n"
            )
    rows = [fan_out_row(row) for row in result["fan_outs"]]
    parts.append(
        "### Fan-out: 1 secure sender, N secure receivers\n\n"
        + report.table(FAN_OUT_HEADERS, rows)
        + "\n"
    )
    return "\n".join(parts)


SUMMARY_HEADERS = [
    "configuration", "profile", "lossless msgs/s", "repeats lossless", "steps in medians",
    "delivered/s",
    "p50 ms", "p99 ms", "CPU ms/msg", "main", "workers", "bare ms/msg", "x bare",
    "daemon cores", "load cores", "other cores",
]  # fmt: skip
RATIO_HEADERS = [
    "configuration", "lossless rate, secure / legacy", "CPU/msg, secure / legacy",
    "secure x bare", "legacy x bare",
]  # fmt: skip
STEP_HEADERS = [
    "asked/s", "offered/s", "delivered/s", "skipped", "loss", "lossless", "p50 ms", "p99 ms",
    "CPU ms/msg", "main", "daemon cores", "load cores", "RTT ms", "resent", "drops",
]  # fmt: skip
FAN_OUT_HEADERS = [
    "receivers", "rate/s", "lossless", "p50 ms", "p99 ms", "CPU ms/msg", "main",
    "CPU ms/copy", "bare ms/msg", "x bare", "roster s", "step drops", "registration drops",
]  # fmt: skip


SIDE_FIGURES = ("offered/s", "delivered/s", "loss", "p99 ms", "CPU ms/msg", "lossless")
SIDE_HEADERS = [
    "asked/s",
    *(f"{profile} {figure}" for profile in PROFILES for figure in SIDE_FIGURES),
]


def side_by_side(profiles: dict[str, dict[str, Any]]) -> list[list[object]]:
    """One row per rate asked of either ladder: each profile's step at that rate."""
    by_rate = {
        profile: {step["rate_asked_per_s"]: step for step in measured["steps"]}
        for profile, measured in profiles.items()
    }
    rates = sorted({rate for steps in by_rate.values() for rate in steps})
    rows: list[list[object]] = []
    for rate in rates:
        row: list[object] = [rate]
        for profile in PROFILES:
            step = by_rate[profile].get(rate)
            row += ["-"] * len(SIDE_FIGURES) if step is None else [
                step["offered_per_s"], step["delivered_per_s"], report.pct(step["loss"]),
                step["latency_p99_ms"], step["relay_cpu_ms_per_msg"],
                "yes" if step["lossless"] else "no",
            ]  # fmt: skip
        rows.append(row)
    return rows


def step_row(step: dict[str, Any], label: str | None = None) -> list[object]:
    return [
        label or step["rate_asked_per_s"], step["offered_per_s"], step["delivered_per_s"], step["skipped"],
        report.pct(step["loss"]), "yes" if step["lossless"] else "no", step["latency_p50_ms"],
        step["latency_p99_ms"], step["relay_cpu_ms_per_msg"], step["relay_main_ms_per_msg"],
        step["relay_cores"], step["load_cores"], step.get("relay_rtt_ms"),
        step["sender"].get("retransmissions"),
        drops(step),
    ]  # fmt: skip


def drops(step: dict[str, Any]) -> str:
    """The relay's drops in the step, and the clients' (datagrams they dropped, or
    could not send) when there were any."""
    text = report.drops(step["counters"])
    if not step["client_errors"]:
        return text
    errors = "client errors: " + report.drops({"dropped": step["client_errors"]})
    return errors if text == "-" else f"{text}; {errors}"


def fan_out_row(row: dict[str, Any]) -> list[object]:
    step = row["step"]
    return [
        row["receivers"], row["rate_per_s"], "yes" if row["lossless"] else "no",
        step["latency_p50_ms"], step["latency_p99_ms"], step["relay_cpu_ms_per_msg"],
        step["relay_main_ms_per_msg"], row["cpu_ms_per_copy"], row["bare_floor"]["cpu_ms_per_msg"],
        row["cpu_vs_bare"], row["roster_s"], drops(step),
        report.drops({"dropped": row["registration_drops"]}),
    ]  # fmt: skip
