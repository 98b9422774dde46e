"""The memory one loaded RSA public key takes, measured in a fresh process."""

import gc
from multiprocessing.connection import Connection

from cryptography.hazmat.primitives import serialization

from mcrelay.protocol.legacy import crypto
from relaybench.idle import synthetic_public_key
from relaybench.procfs import rss_bytes


def main(conn: Connection, count: int) -> None:
    """Reply with the RSS growth per key of ``count`` distinct keys loaded from PEM, kept alive."""
    pems = [crypto.public_key_to_pem(synthetic_public_key()) for _ in range(count)]
    gc.collect()
    before = rss_bytes()
    keys = [serialization.load_pem_public_key(pem) for pem in pems]
    gc.collect()
    after = rss_bytes()
    conn.send(("ok", {"keys": len(keys), "rss_bytes_per_key": (after - before) / count}))
    conn.recv()
