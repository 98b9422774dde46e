"""The daemon as systemd runs it: a subprocess telling a NOTIFY_SOCKET the test owns."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from support import write_key

WAIT_S = 10.0


def messages(sock: socket.socket, until: str) -> Iterator[dict[str, str]]:
    """Datagrams as dicts, up to and including the first with ``until`` in it."""
    deadline = time.monotonic() + WAIT_S
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(4096)
        message = dict(line.split("=", 1) for line in data.decode().splitlines())
        yield message
        if until in message:
            return


@contextmanager
def daemon(tmp_path: Path, key: rsa.RSAPrivateKey, notify: str) -> Iterator[subprocess.Popen[str]]:
    config = tmp_path / "mcrelay.toml"
    config.write_text(f"[relay]\nkey_file = '{write_key(tmp_path / 'k.pem', key)}'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCRELAY_")}
    env.update(NOTIFY_SOCKET=notify, WATCHDOG_USEC="400000", WATCHDOG_PID="")
    argv = [sys.executable, "-m", "mcrelay", "daemon", "--config", str(config)]
    argv += ["--interface", "127.0.0.1", "--port", "0", "--api", "off"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("abstract", [False, True])
def test_ready_watchdog_reload_and_stopping(
    tmp_path: Path, keys: list[rsa.RSAPrivateKey], abstract: bool
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock:
        if abstract:
            name = f"mcrelay-test-{os.getpid()}-{time.monotonic_ns()}"
            sock.bind("\0" + name)
            notify = "@" + name
        else:
            notify = str(tmp_path / "notify.sock")
            sock.bind(notify)
        with daemon(tmp_path, keys[0], notify) as proc:
            ready = list(messages(sock, "READY"))[-1]
            assert ready["STATUS"].startswith("serving 0 clients")
            pings = [m for m in messages(sock, "WATCHDOG") if "WATCHDOG" in m]
            pings += [m for m in messages(sock, "WATCHDOG") if "WATCHDOG" in m]
            assert len(pings) == 2
            proc.send_signal(signal.SIGHUP)
            reloading = list(messages(sock, "RELOADING"))[-1]
            assert int(reloading["MONOTONIC_USEC"]) > 0
            list(messages(sock, "READY"))
            proc.send_signal(signal.SIGTERM)
            list(messages(sock, "STOPPING"))
            assert proc.wait(timeout=5) == 0


def test_nothing_is_sent_without_notify_socket(
    tmp_path: Path, keys: list[rsa.RSAPrivateKey]
) -> None:
    with daemon(tmp_path, keys[0], "") as proc:
        assert proc.stderr is not None
        while "relay listening" not in proc.stderr.readline():
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
