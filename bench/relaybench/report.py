"""Where results go, the machine and code they were measured on, and Markdown tables."""

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
RESULTS = BENCH / "results"


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "loadavg_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "trio": importlib.metadata.version("trio"),
        "cryptography": importlib.metadata.version("cryptography"),
    }


def code_state() -> dict[str, Any]:
    """The code under test: HEAD, and the files of src/ that differ from it (others edit it)."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=BENCH, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    return {
        "head": git("rev-parse", "HEAD"),
        "src_changes": git("status", "--porcelain", "--", "../src").splitlines(),
    }


def envelope(name: str, settings: dict[str, Any], started: float) -> dict[str, Any]:
    """What every result file starts with."""
    return {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "machine": machine(),
        "code": code_state(),
        "total_s": time.monotonic() - started,
    }


def write(name: str, result: dict[str, Any], markdown: str) -> Path:
    """``results/<name>.json`` (with the Markdown in it) and ``results/<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**result, "markdown": markdown}, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown + "\n")
    return path


def read(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def fmt(value: object, digits: int = 3) -> str:
    """A figure for a table: about ``digits`` significant digits, '-' for nothing."""
    if value is None:
        return "-"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return str(value)
    assert isinstance(value, float)
    if abs(value) < 5e-4:
        return "0"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table: columns of figures right-aligned, columns of words left-aligned."""
    words = [
        all(isinstance(cell, str) and not cell[:1].isdigit() for cell in column)
        for column in zip(*rows, strict=True)
    ] or [False] * len(headers)
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if word else "---:" for word in words) + "|",
    ]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def drops(counters: dict[str, Any] | None) -> str:
    """The relay's drops in an interval, as ``reason n, ...`` (or '-')."""
    if not counters or not counters["dropped"]:
        return "-"
    return ", ".join(f"{reason} {count}" for reason, count in sorted(counters["dropped"].items()))


def header(result: dict[str, Any]) -> str:
    """One line saying where and on what code a result was measured."""
    m, code = result["machine"], result["code"]
    dirty = (
        f", src/ differs from HEAD in {len(code['src_changes'])} files"
        if code["src_changes"]
        else ""
    )
    return (
        f"{result['when']}, git {code['head'][:7]}{dirty}; {m['cores']} cores ({m['cpu_model']}), "
        f"load average {m['loadavg_1min']:.2f} at the end, Python {m['python']}, "
        f"cryptography {m['cryptography']}, trio {m['trio']}; {result['total_s']:.0f} s."
    )
