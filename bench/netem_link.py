"""A lossy point-to-point link between two network namespaces, with netem's model in user space.

This machine's kernel is built without sch_netem (``tc qdisc add ... netem``
answers "Specified qdisc kind is unknown"), so the impairment cannot sit on a
loopback. Instead two namespaces are joined by two TUN devices, ``lossy-relay``
(192.0.2.1) and ``lossy-clients`` (192.0.2.2), MTU 65535 so a datagram is one
packet as on loopback, and a process holds both ends and forwards every IPv4
packet through netem's model, per packet and per direction:

* duplicate with probability D, lose with probability L, drawn independently;
  no copy crosses only when the packet is lost and not duplicated. The
  duplicate is impaired again (its own loss, delay and reorder draws, never
  duplicated), as netem re-enqueues it;
* reorder R: a crossing copy skips the delay with probability R (netem's
  ``reorder``, which needs a delay), else waits ``delay +- jitter`` (uniform,
  netem's default distribution), so delayed copies also overtake each other.

Nothing but the link is in the namespaces, so no packet can leave the machine.
Needs root (namespaces, /dev/net/tun), ``ip`` and ``tc``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio

RELAY_IP, CLIENTS_IP = "192.0.2.1", "192.0.2.2"
"""TEST-NET-1 addresses: they exist only on the link between our two namespaces."""
RELAY_TUN, CLIENTS_TUN = "lossy-relay", "lossy-clients"
LINK_MTU = 65535
LINK_TXQUEUE_PACKETS = 10000
"""Deep kernel queues at the TUN ends, so that only the link drops packets."""
MAX_READS_PER_WAKEUP = 256
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
# IPv4 header: version/IHL u8 | TOS u8 | length u16 | id u16 | flags/offset u16 |
# TTL u8 | protocol u8 | checksum u16 | source 4s | destination 4s (options follow)
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
UDP_HEADER_BYTES = 8
IP_PROTOCOL_UDP = 17
IP_MORE_FRAGMENTS_AND_OFFSET = 0x3FFF


@dataclass(frozen=True, slots=True)
class Impairment:
    loss: float
    duplicate: float
    reorder: float
    delay_s: float
    jitter_s: float

    def copies(self, rng: random.Random) -> int:
        """Copies of one packet that cross (0, 1 or 2), drawn as netem draws them."""
        count = 1 + (rng.random() < self.duplicate) - (rng.random() < self.loss)
        if count == 2:  # the duplicate is impaired again, without duplication
            count = 1 + (rng.random() >= self.loss)
        return count

    def delay(self, rng: random.Random) -> float:
        """0 for a copy that skips the queue (netem's reorder), else delay +- jitter."""
        if rng.random() < self.reorder:
            return 0.0
        return max(0.0, rng.uniform(self.delay_s - self.jitter_s, self.delay_s + self.jitter_s))

    def datagram_delivery(self) -> float:
        """Probability that at least one copy crosses: not (lost and not duplicated)."""
        return 1 - self.loss * (1 - self.duplicate)


@dataclass
class DirectionStats:
    packets_in: int = 0
    lost: int = 0
    duplicated: int = 0
    sent_at_once: int = 0
    delayed: int = 0
    packets_out: int = 0
    write_errors: int = 0
    not_ipv4: int = 0


def udp_payload(packet: bytes) -> bytes | None:
    """The UDP payload of an unfragmented IPv4 packet, else None."""
    if len(packet) < IPV4_HEADER.size:
        return None
    version_ihl, _, _, _, flags_offset, _, protocol, _, _, _ = IPV4_HEADER.unpack_from(packet)
    if protocol != IP_PROTOCOL_UDP or flags_offset & IP_MORE_FRAGMENTS_AND_OFFSET:
        return None
    return packet[(version_ihl & 0x0F) * 4 + UDP_HEADER_BYTES :]


class LinkDirection:
    """One way of the link: packets read from one TUN end, impaired, written to the other.

    ``observe(payload, copies)`` sees each UDP payload with the number of its
    copies that will cross (it may raise ``ignored``, which is ignored).
    """

    def __init__(
        self,
        ends: tuple[int, int],
        impairment: Impairment,
        rng: random.Random,
        observe: Callable[[bytes, int], None],
        ignored: type[Exception],
    ) -> None:
        self._source, self._sink = ends
        self._impairment, self._rng = impairment, rng
        self._observe, self._ignored = observe, ignored
        self.stats = DirectionStats()
        self.pending = 0
        """Copies waiting out their delay."""

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                await trio.lowlevel.wait_readable(self._source)
                for _ in range(MAX_READS_PER_WAKEUP):
                    try:
                        packet = os.read(self._source, LINK_MTU)
                    except BlockingIOError:
                        break
                    self._forward(packet, nursery)

    def _forward(self, packet: bytes, nursery: trio.Nursery) -> None:
        self.stats.packets_in += 1
        if packet[0] >> 4 != 4:
            self.stats.not_ipv4 += 1
            return
        copies = self._impairment.copies(self._rng)
        self.stats.lost += copies == 0
        self.stats.duplicated += copies == 2
        if (payload := udp_payload(packet)) is not None:
            with contextlib.suppress(self._ignored):
                self._observe(payload, copies)
        for _ in range(copies):
            if (delay := self._impairment.delay(self._rng)) == 0.0:
                self.stats.sent_at_once += 1
                self._write(packet)
            else:
                self.stats.delayed += 1
                self.pending += 1
                nursery.start_soon(self._write_later, delay, packet)

    async def _write_later(self, delay: float, packet: bytes) -> None:
        await trio.sleep(delay)
        self.pending -= 1
        self._write(packet)

    def _write(self, packet: bytes) -> None:
        try:
            os.write(self._sink, packet)
        except OSError:
            self.stats.write_errors += 1
        else:
            self.stats.packets_out += 1


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError(f"'{name}' is not installed")
    return found


def run_tool(*argv: str) -> str:
    done = subprocess.run([tool(argv[0]), *argv[1:]], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


@contextlib.contextmanager
def namespaces(prefix: str) -> Iterator[tuple[str, str]]:
    """The relay's and the clients' namespaces, fresh, loopback up. On the way out whatever
    still runs in them (only our processes can) is killed by pid, and both are deleted."""
    made: list[str] = []
    try:
        for name in (f"{prefix}-relay", f"{prefix}-clients"):
            run_tool("ip", "netns", "add", name)
            made.append(name)
            run_tool("ip", "-n", name, "link", "set", "lo", "up")
        yield made[0], made[1]
    finally:
        for name in made:
            for pid in run_tool("ip", "netns", "pids", name).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run_tool("ip", "netns", "delete", name)


def netem_probe(netns: str) -> str:
    """'available', or what tc says when asked for netem (on that namespace's loopback)."""
    command = [
        tool("tc"),
        "-n",
        netns,
        "qdisc",
        "add",
        "dev",
        "lo",
        "root",
        "netem",
        "delay",
        "1ms",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return "available" if done.returncode == 0 else done.stderr.strip()


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def tun_pair(clients_ns: str) -> Iterator[tuple[int, int]]:
    """Both TUN ends, made in this (the relay's) namespace; the clients' end moved to theirs.
    The devices vanish when their descriptors close."""
    with contextlib.ExitStack() as stack:
        relay_fd = open_tun(RELAY_TUN)
        stack.callback(os.close, relay_fd)
        clients_fd = open_tun(CLIENTS_TUN)
        stack.callback(os.close, clients_fd)
        run_tool("ip", "link", "set", CLIENTS_TUN, "netns", clients_ns)
        for netns, device, local, peer in (
            ("", RELAY_TUN, RELAY_IP, CLIENTS_IP),
            (clients_ns, CLIENTS_TUN, CLIENTS_IP, RELAY_IP),
        ):
            where = ("-n", netns) if netns else ()
            run_tool("ip", *where, "addr", "add", local, "peer", peer, "dev", device)
            run_tool("ip", *where, "link", "set", device, "mtu", str(LINK_MTU),
                     "txqueuelen", str(LINK_TXQUEUE_PACKETS), "up")  # fmt: skip
        yield relay_fd, clients_fd


def queue_stats(clients_ns: str) -> dict[str, dict[str, Any]]:
    """The kernel's counters for both TUN ends' queues: drops there would not be the link's."""
    stats = {}
    for netns, device in (("", RELAY_TUN), (clients_ns, CLIENTS_TUN)):
        where = ("-n", netns) if netns else ()
        (qdisc,) = json.loads(run_tool("tc", *where, "-s", "-j", "qdisc", "show", "dev", device))
        stats[device] = {
            name: qdisc.get(name) for name in ("kind", "packets", "drops", "overlimits")
        }
    return stats
