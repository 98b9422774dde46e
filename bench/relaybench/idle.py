"""An idle-client process: thousands of sockets, each registered with a key of its own.

Making thousands of real RSA key pairs would take minutes, and idle clients
never decrypt anything, so each gets a synthetic public key: a random odd
2048-bit modulus with e = 65537. The relay checks only the size and the
exponent, so it holds one distinct key object per client, as it would in real
life (identical PEMs would share one through its parse cache).
"""

import os
from dataclasses import dataclass
from multiprocessing.connection import Connection

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol import legacy
from mcrelay.protocol.legacy import crypto
from relaybench import sockets
from relaybench.pacing import Pacer
from relaybench.procfs import raise_nofile

IDLE_RECEIVE_BUFFER_BYTES = 1
"""The kernel's smallest buffer: idle clients never read, the relay's notices to them drop."""
TIME_LIMIT_S = 120.0


def synthetic_public_key(bits: int = crypto.KEY_BITS) -> rsa.RSAPublicKey:
    """An RSA public key that parses as any other (nobody knows, or needs, its factors)."""
    modulus = int.from_bytes(os.urandom(bits // 8), "big") | (1 << (bits - 1)) | 1
    return rsa.RSAPublicNumbers(crypto.PUBLIC_EXPONENT, modulus).public_key()


@dataclass(frozen=True)
class IdleSpec:
    sockets: int
    host: str
    relay: tuple[str, int]
    send_per_s: float
    """Datagrams a second this process sends when it registers or keeps alive."""


def main(conn: Connection, spec: IdleSpec) -> None:
    raise_nofile(spec.sockets + 256)
    socks = sockets.open_sockets(spec.sockets, spec.host, IDLE_RECEIVE_BUFFER_BYTES)
    keys = [legacy.client_key(synthetic_public_key()) for _ in socks]
    conn.send(("ok", len(socks)))
    while True:
        command = conn.recv()
        if command[0] == "stop":
            return
        if command[0] == "register":
            _register, low, high = command
            chosen = list(range(low, min(high, len(socks))))
            datagrams = keys
        else:
            chosen = list(range(len(socks)))
            datagrams = [legacy.keepalive()] * len(socks)
        pacer = Pacer(spec.send_per_s, len(chosen), len(chosen) or 1, TIME_LIMIT_S)
        failed = 0
        while batch := pacer.next_batch():
            for index in chosen[pacer.done - batch : pacer.done]:
                try:
                    socks[index].sendto(datagrams[index], spec.relay)
                except BlockingIOError:
                    failed += 1
        conn.send(("ok", pacer.sent - failed))
