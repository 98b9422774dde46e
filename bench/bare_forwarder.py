"""The bare floor: a Trio loop that forwards fragment datagrams with no protocol work.

It receives on 127.0.0.1:PORT the way the relay's loop does: it waits until
the socket is readable, reads what is there with non-blocking calls, and
sends with non-blocking calls (waiting only while the socket's buffer is
full). A datagram holding CLIENT_PUBLIC_KEY makes its source a member;
SERVER_KEY_REQUEST is answered with the relay key given (so the benchmark's
clients register with it as with the relay). For the last fragment of each
message (seq = total - 1, read from the fragment header, no reassembly) it
sends every other member one datagram of the relayed size: SENDER_INFO +
RELAYED_MESSAGE holding zeros. No decryption, no encryption, no bookkeeping:
its CPU per message is what the Trio loop and the sockets alone cost.
Prints "ready" once bound; runs until killed.
"""

import argparse
import socket
from pathlib import Path

import trio
from relaybench import wire

from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address, encode_address
from mcrelay.protocol.errors import RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.fragments import FRAGMENT_HEADER
from mcrelay.protocol.legacy.tlv import TLV_HEADER, TlvType, decode_tlvs_untrusted

FRAGMENT_TYPE = TLV_HEADER.pack(TlvType.FRAGMENT, 0)[:2]


RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
"""As the relay asks for by default."""
BATCH = 64
"""Datagrams read per wake-up, at most, before Trio gets a turn."""


async def forward(port: int, server_key: bytes, ciphertext_bytes: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    print("ready", flush=True)
    members: set[Address] = set()
    copies: dict[Address, bytes] = {}
    while True:
        await trio.lowlevel.wait_readable(sock)
        for _ in range(BATCH):
            try:
                data, (host, source_port) = sock.recvfrom(65536)
            except BlockingIOError:
                break
            source = (host, source_port)
            if data[:2] == FRAGMENT_TYPE and len(data) >= TLV_HEADER.size + FRAGMENT_HEADER.size:
                _msg_id, seq, total = FRAGMENT_HEADER.unpack_from(data, TLV_HEADER.size)
                if seq + 1 != total:
                    continue
                copy = copies.get(source)
                if copy is None:
                    copy = copies[source] = wire.bare_copy(encode_address(source), ciphertext_bytes)
                for member in list(members):
                    if member != source:
                        await send(sock, copy, member)
                continue
            try:
                tlvs = decode_tlvs_untrusted(data, len(data) // TLV_HEADER.size + 1)
            except RemoteProtocolError:
                continue
            for tlv in tlvs:
                if tlv.type == TlvType.CLIENT_PUBLIC_KEY:
                    members.add(source)
                elif tlv.type == TlvType.SERVER_KEY_REQUEST:
                    await send(sock, server_key, source)


async def send(sock: socket.socket, datagram: bytes, address: Address) -> None:
    """Send now; only when the socket's buffer is full, wait until it is writable."""
    while True:
        try:
            sock.sendto(datagram, address)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
        else:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--relay-public-key", type=Path, required=True, help="PEM file")
    parser.add_argument("--ciphertext-bytes", type=int, required=True, help="per relayed copy")
    args = parser.parse_args()
    key = crypto.load_public_key_untrusted(args.relay_public_key.read_bytes())
    trio.run(forward, args.port, legacy.server_key(key), args.ciphertext_bytes)


if __name__ == "__main__":
    main()
