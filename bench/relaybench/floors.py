"""The two floors the relay is measured against, taken in the same run.

(a) The crypto floor: per message, one RSA-2048 OAEP-SHA256 decrypt per
190-byte block and one encrypt per recipient and block, in as many threads as
there are cores (``cryptography`` releases the GIL). Its CPU per message is
summed thread CPU time over messages; its rate is messages over wall time.

(b) The bare floor: ``bench/bare_forwarder.py``, a Trio loop that receives the
same fragment datagrams and sends one datagram of the relayed size to every
other member per message, with no reassembly, no crypto and no bookkeeping.
"""

import contextlib
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.legacy import crypto
from relaybench.daemon import INTERFACE, free_port, stop_process
from relaybench.keys import BenchKeys
from relaybench.load import open_fleet
from relaybench.procfs import machine_busy_s
from relaybench.senders import TICK_S

BARE_FORWARDER = Path(__file__).resolve().parent.parent / "bare_forwarder.py"
READY_TIMEOUT_S = 10.0


def cores() -> int:
    return len(os.sched_getaffinity(0)) or 1


def blocks_for(size: int) -> int:
    """RSA blocks of a message of ``size`` bytes (190 bytes of plaintext each)."""
    return max(1, -(-size // 190))


@dataclass(frozen=True)
class CryptoFloor:
    blocks: int
    recipients: int
    threads: int
    messages: int
    wall_s: float
    cpu_s: float
    other_cores: float
    """CPU the rest of the machine used meanwhile, in cores: other load disturbs the floor."""

    @property
    def cpu_ms_per_msg(self) -> float:
        return 1e3 * self.cpu_s / self.messages

    @property
    def msgs_per_s(self) -> float:
        """Messages a second on all the threads (cores) together."""
        return self.messages / self.wall_s

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "cpu_ms_per_msg": self.cpu_ms_per_msg,
            "msgs_per_s": self.msgs_per_s,
        }


FLOOR_ROUNDS = 3


def crypto_floor(
    relay_key: rsa.RSAPrivateKey,
    recipient_key: rsa.RSAPublicKey,
    blocks: int,
    recipients: int,
    seconds: float,
) -> CryptoFloor:
    """The RSA work of relaying messages of ``blocks`` blocks to ``recipients``, on all cores.

    The best of ``FLOOR_ROUNDS`` rounds (least CPU per message): a floor is what the
    work costs when nothing else on the machine gets in its way."""
    rounds = [
        _crypto_round(relay_key, recipient_key, blocks, recipients, seconds / FLOOR_ROUNDS)
        for _ in range(FLOOR_ROUNDS)
    ]
    return min(rounds, key=lambda floor: floor.cpu_ms_per_msg)


def pooled(measured: list[CryptoFloor]) -> CryptoFloor:
    """Floors taken at different times as one: the machine's speed drifts (a VM's does)."""
    return CryptoFloor(
        blocks=measured[0].blocks,
        recipients=measured[0].recipients,
        threads=measured[0].threads,
        messages=sum(floor.messages for floor in measured),
        wall_s=sum(floor.wall_s for floor in measured),
        cpu_s=sum(floor.cpu_s for floor in measured),
        other_cores=max(floor.other_cores for floor in measured),
    )


def _crypto_round(
    relay_key: rsa.RSAPrivateKey,
    recipient_key: rsa.RSAPublicKey,
    blocks: int,
    recipients: int,
    seconds: float,
) -> CryptoFloor:
    threads = cores()
    ciphertext = crypto.encrypt_blocks(relay_key.public_key(), os.urandom(190))[0]
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def work() -> None:
        start.wait()
        deadline = time.perf_counter() + seconds
        cpu = time.thread_time()
        messages = 0
        while time.perf_counter() < deadline:
            for _block in range(blocks):
                plaintext = crypto.decrypt_block_untrusted(relay_key, ciphertext)
                for _recipient in range(recipients):
                    crypto.encrypt_blocks(recipient_key, plaintext)
            messages += 1
        with lock:
            results.append((messages, time.thread_time() - cpu))

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    began, machine_before, own_before = time.perf_counter(), machine_busy_s(), _own_cpu_s()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - began
    other_s = machine_busy_s() - machine_before - (_own_cpu_s() - own_before)
    return CryptoFloor(
        blocks=blocks,
        recipients=recipients,
        threads=threads,
        messages=sum(m for m, _cpu in results),
        wall_s=wall,
        cpu_s=sum(cpu for _m, cpu in results),
        other_cores=other_s / wall,
    )


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def running_bare_forwarder(
    keys: BenchKeys, copy_bytes: int
) -> Iterator[tuple[int, tuple[str, int]]]:
    """``bench/bare_forwarder.py`` on a free loopback port: (its pid, its address)."""
    port = free_port(socket.SOCK_DGRAM)
    key_file = keys.key_file.with_name("relay-public.pem")
    key_file.write_bytes(keys.relay_public_pem)
    command = [
        sys.executable, str(BARE_FORWARDER),
        "--port", str(port),
        "--relay-public-key", str(key_file),
        "--ciphertext-bytes", str(copy_bytes),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        if not ready.startswith(b"ready"):
            raise RuntimeError(f"bare forwarder did not start: {ready!r}")
        yield process.pid, (INTERFACE, port)
    finally:
        stop_process(process)


def bare_floor(
    keys: BenchKeys,
    senders: int,
    receivers: int,
    size: int,
    rate_per_s: float,
    duration_s: float,
    receiver_processes: int,
    tick_s: float = TICK_S,
    repeats: int = 1,
) -> dict[str, Any]:
    """CPU per message of the bare forwarder under the same load, at one rate (its
    senders waking at most once per ``tick_s``): the median of ``repeats`` steps (a
    step's CPU is read in 10 ms ticks; a 2 s step of the bare floor is about 40)."""
    copy_bytes = crypto.encrypted_size(keys.client.public_key(), size)
    with (
        running_bare_forwarder(keys, copy_bytes) as (pid, address),
        open_fleet(
            address,
            keys,
            senders,
            receivers,
            receiver_processes,
            api=None,
            sample=False,
            tick_s=tick_s,
        ) as fleet,
    ):
        steps = [fleet.step(pid, None, n, rate_per_s, duration_s, size) for n in range(repeats)]
    steps.sort(key=lambda step: step["relay_cpu_ms_per_msg"] or 0.0)
    result = steps[len(steps) // 2]
    return {
        "rate_per_s": rate_per_s,
        "delivered_per_s": result["delivered_per_s"],
        "loss": result["loss"],
        "cpu_ms_per_msg": result["relay_cpu_ms_per_msg"],
        "cores": result["relay_cores"],
        "cpu_ms_per_msg_steps": [step["relay_cpu_ms_per_msg"] for step in steps],
    }
