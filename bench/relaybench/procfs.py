"""What /proc says about a process and the machine: CPU by thread, memory, UDP drops."""

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _ticks(stat_path: Path) -> int:
    """utime + stime, in clock ticks, from a /proc stat file."""
    fields = stat_path.read_text().rsplit(")", 1)[1].split()
    # After the ")" that closes comm, fields[0] is field 3 (state): utime is 14, stime 15.
    return int(fields[11]) + int(fields[12])


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    """CPU seconds of a whole process and of its main thread (the rest: its other threads)."""

    total_s: float
    main_s: float

    @property
    def others_s(self) -> float:
        return self.total_s - self.main_s

    def __sub__(self, earlier: "ProcessCpu") -> "ProcessCpu":
        return ProcessCpu(self.total_s - earlier.total_s, self.main_s - earlier.main_s)


def process_cpu(pid: int) -> ProcessCpu:
    """utime + stime of ``pid`` (every thread, dead ones included) and of its children
    running now (the relay's crypto workers), and of its main thread."""
    proc = Path(f"/proc/{pid}")
    children = [
        child
        for task in (proc / "task").iterdir()
        for child in _read_or_empty(task / "children").split()
    ]
    ticks = _ticks(proc / "stat")
    for child in children:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            ticks += _ticks(Path(f"/proc/{child}/stat"))
    return ProcessCpu(
        total_s=ticks / CLK_TCK,
        main_s=_ticks(proc / "task" / str(pid) / "stat") / CLK_TCK,
    )


def _read_or_empty(path: Path) -> str:
    """A /proc file's text, or nothing when its thread ended meanwhile."""
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def processes_cpu_s(pids: list[int]) -> float:
    """utime + stime of several processes together (the load generators)."""
    return sum(_ticks(Path(f"/proc/{pid}/stat")) for pid in pids) / CLK_TCK


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size (VmRSS) of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def machine_busy_s() -> float:
    """CPU seconds every process has used, on all cores (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        ticks = [int(value) for value in f.readline().split()[1:]]
    return sum(ticks[i] for i in (0, 1, 2, 5, 6)) / CLK_TCK


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped for a full receive buffer (this network namespace)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    counters = dict(zip(rows[0][1:], rows[1][1:], strict=True))
    return int(counters["RcvbufErrors"])


def raise_nofile(needed: int) -> None:
    """Let this process open ``needed`` descriptors (raising the hard limit if it must and may)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
    except (ValueError, OSError):
        raise RuntimeError(f"{needed} file descriptors needed, the hard limit is {hard}") from None
