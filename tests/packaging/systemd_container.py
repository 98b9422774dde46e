"""A Debian 12 container booted with systemd-nspawn: the unit under a real systemd.

The root file system is built once with mmdebstrap and kept in CACHE_DIR, outside
the checkout, under a name made from what goes into it (suite, packages,
architecture); the dependency wheels likewise, from the project's dependencies. A
change of either builds a new one and removes the old. The container boots that
tree read-only under a tmpfs overlay (``--volatile=overlay``): every boot starts
clean, and nothing of it is left once it stops. Its network is private (loopback
only). Commands run inside with ``nsenter``; the container's PID 1 is addressed by
a pidfd, so a stop can never hit another process.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CACHE_DIR = Path("/var/cache/mcrelay-tests")
SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv")
"""No procps: the unit must reload without /bin/kill."""
PYTHON = "3.11"
"""bookworm's python3, for which the dependency wheels are fetched."""
GLIBC_MINOR = 36
"""bookworm's glibc is 2.36: wheels for manylinux_2_36 and older fit."""
TOOLS = {"systemd-nspawn": "systemd-container", "mmdebstrap": "mmdebstrap", "nsenter": "util-linux"}
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_PAGER": "",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}
BUILD_TIMEOUT_S = 600.0
BOOT_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 30.0
HALT_TIMEOUT_S = 20.0
KILL_TIMEOUT_S = 5.0
POLL_S = 0.1
PR_SET_PDEATHSIG = 1


class ContainerError(Exception):
    """Building, booting or running something in the container failed."""


def why_not_runnable() -> str | None:
    """Why this machine cannot boot the container, or None."""
    if os.geteuid() != 0:
        return "needs root: it boots a Debian 12 container with systemd-nspawn"
    missing = {tool: package for tool, package in TOOLS.items() if shutil.which(tool) is None}
    if missing:
        return (
            f"needs {', '.join(missing)} to boot a Debian 12 container: "
            f"apt-get install {' '.join(sorted(set(missing.values())))}"
        )
    return None


def run(argv: list[str], timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run a command on the host; its stdout, or ContainerError with its output."""
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise ContainerError(
            f"{' '.join(argv[:4])} ... exited with {result.returncode}\n"
            f"{result.stdout[-2000:]}{result.stderr[-4000:]}"
        )
    return result.stdout


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _cached(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """CACHE_DIR/name-key, made by ``build`` if missing; other keys of ``name`` go."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    target = CACHE_DIR / f"{name}-{key}"
    with (CACHE_DIR / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same thing
        if target.is_dir():
            return target
        partial = CACHE_DIR / f"{name}-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        build(partial)
        for old in CACHE_DIR.glob(f"{name}-*"):
            if old != partial:
                shutil.rmtree(old)
        partial.rename(target)
    return target


def root_filesystem() -> Path:
    """A minimal Debian 12 with systemd and Python, built once (about 20 s)."""
    key = _key(SUITE, "minbase", PACKAGES, platform.machine())
    include = f"--include={','.join(PACKAGES)}"

    def build(tree: Path) -> None:
        run(
            ["mmdebstrap", "--quiet", "--variant=minbase", include, SUITE, str(tree)],
            BUILD_TIMEOUT_S,
        )

    return _cached("rootfs", key, build)


def wheelhouse(pyproject: Path) -> Path:
    """Wheels of the project's dependencies (and of its build backend) for bookworm's
    Python, fetched once from the package registry: the container has no network."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    requirements = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    arch = platform.machine()
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 4, -1)]
    platforms += [f"manylinux{legacy}_{arch}" for legacy in ("2014", "2010", "1")]
    abi = "cp" + PYTHON.replace(".", "")
    target = ["--python-version", PYTHON, "--implementation", "cp", "--only-binary=:all:"]
    target += [f"--abi={tag}" for tag in (abi, "abi3", "none")]
    target += [f"--platform={tag}" for tag in platforms]

    def build(directory: Path) -> None:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(directory)]
        run([*pip, *target, *requirements], BUILD_TIMEOUT_S)

    return _cached("wheels", _key(requirements, target), build)


def project_wheel(repo: Path, wheels: Path, out: Path) -> Path:
    """A wheel of the checkout as it stands (uncommitted changes too), built offline in
    a copy so that the checkout gets no build/ or egg-info."""
    source = out / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(repo / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo / name, source / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index"]
    run([*pip, "--find-links", str(wheels), "--wheel-dir", str(out / "wheel"), str(source)])
    [wheel] = (out / "wheel").glob("mcrelay-*.whl")
    return wheel


def wait_until(check: Callable[[], T | None], what: str, timeout_s: float) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout_s:g} s")
        time.sleep(POLL_S)


class Container:
    """Commands inside a booted container, as root, in all of its namespaces."""

    def __init__(self, leader: int) -> None:
        self.leader = leader

    def _argv(self, argv: tuple[str, ...]) -> list[str]:
        return ["nsenter", f"--target={self.leader}", "--all", "--", *argv]

    def run(
        self,
        *argv: str,
        input: str | None = None,
        check: bool = True,
        timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self._argv(argv),
            input=input,
            capture_output=True,
            text=True,
            env=CONTAINER_ENV,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            raise ContainerError(
                f"{' '.join(argv)} exited with {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def popen(self, *argv: str) -> subprocess.Popen[bytes]:
        """A command with unbuffered pipes (read them with LineReader)."""
        pipe = subprocess.PIPE
        return subprocess.Popen(
            self._argv(argv), stdin=pipe, stdout=pipe, stderr=pipe, env=CONTAINER_ENV, bufsize=0
        )

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("sh", "-c", 'cat > "$1" && chmod "$2" "$1"', "sh", path, mode, input=text)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl show`` properties of ``unit``."""
        out = self.run("systemctl", "show", unit, f"--property={','.join(properties)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal_end(self) -> int:
        """The sequence number of the journal's last entry: pass it to ``journal``."""
        [last] = self.journal("--lines=1")
        return _sequence_number(last)

    def journal(self, *args: str, after: int | None = None) -> list[dict[str, Any]]:
        """Journal entries as dicts (``journalctl --output=json``), oldest first; only those
        after ``after`` if given. (Not with --after-cursor: journalctl 252 then drops the
        first entry that matches when the cursor's own entry does not match.)"""
        out = self.run("journalctl", "--output=json", "--no-pager", *args).stdout
        entries = [json.loads(line) for line in out.splitlines()]
        if after is None:
            return entries
        return [entry for entry in entries if _sequence_number(entry) > after]

    def wait_booted(self) -> None:
        def state() -> str | None:
            # Fails until the container's systemd listens; then says how far it got.
            out = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            return out if out in ("running", "degraded") else None

        wait_until(state, "booted system in the container", BOOT_TIMEOUT_S)


def _sequence_number(entry: dict[str, Any]) -> int:
    """From the entry's cursor: ``s=...;i=<sequence number, hex>;b=...``."""
    fields = dict(part.split("=", 1) for part in entry["__CURSOR"].split(";"))
    return int(fields["i"], 16)


class LineReader:
    """Lines from an unbuffered pipe, each waited for at most a given time."""

    def __init__(self, pipe: Any) -> None:
        self._fd: int = pipe.fileno()
        self._buffer = b""

    def line(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no line within {timeout_s:g} s (so far: {self._buffer!r})")
            data = os.read(self._fd, 65536)
            if not data:
                raise AssertionError(f"the stream ended (so far: {self._buffer!r})")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


@contextmanager
def booted(root: Path, binds: dict[Path, str], log: Path) -> Iterator[Container]:
    """Boot ``root`` (read-only, with a tmpfs overlay) with ``binds`` mounted read-only;
    stop the container on the way out, whatever happened."""
    argv = [
        "systemd-nspawn",
        f"--directory={root}",
        "--volatile=overlay",
        "--boot",
        "--register=no",
        "--keep-unit",
        "--private-network",
        "--console=pipe",
        f"--machine=mcrelay-test-{os.getpid()}",
        *(f"--bind-ro={host}:{inside}" for host, inside in binds.items()),
    ]
    with log.open("wb") as output:
        nspawn = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a ^C to the tests reaches nspawn only through us
            preexec_fn=_halt_with_parent,
        )
    leader_fd: int | None = None
    try:
        leader = _wait_for_leader(nspawn, log)
        leader_fd = os.pidfd_open(leader)
        container = Container(leader)
        container.wait_booted()
        yield container
    finally:
        _stop(nspawn, leader_fd)


def _halt_with_parent() -> None:
    """In nspawn before exec: SIGTERM (a clean halt) if the test process dies first."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_for_leader(nspawn: subprocess.Popen[bytes], log: Path) -> int:
    """The container's PID 1 (as the host numbers it): nspawn's child that is PID 1 in
    its own PID namespace."""

    def leader() -> int | None:
        if nspawn.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            raise ContainerError(f"systemd-nspawn exited with {nspawn.returncode}\n{tail}")
        children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children")
        for pid in map(int, children.read_text().split()):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            nspid = next(line for line in status.splitlines() if line.startswith("NSpid:"))
            if nspid.split()[-1] == "1" and len(nspid.split()) > 2:
                return pid
        return None

    return wait_until(leader, "container PID 1", BOOT_TIMEOUT_S)


def _stop(nspawn: subprocess.Popen[bytes], leader_fd: int | None) -> None:
    """Halt the container cleanly, else at once; leave no process of it behind."""
    try:
        for _ in range(2):  # nspawn: the first SIGTERM halts the container, a second ends it
            if nspawn.poll() is not None:
                break
            nspawn.send_signal(signal.SIGTERM)
            try:
                nspawn.wait(HALT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                continue
        if nspawn.poll() is None:
            nspawn.kill()
            nspawn.wait(KILL_TIMEOUT_S)
        if leader_fd is not None:
            readable, _, _ = select.select([leader_fd], [], [], 0)  # readable once it has exited
            if not readable:
                # SIGKILL to a PID namespace's init ends every process in it.
                signal.pidfd_send_signal(leader_fd, signal.SIGKILL)
                select.select([leader_fd], [], [], KILL_TIMEOUT_S)
    finally:
        if leader_fd is not None:
            os.close(leader_fd)
