"""The legacy wire profile (the seed protocol): datagrams to events and back.

The normative description is ``docs/protocol.md``. Everything here is sans-I/O:
bytes in, events out; arguments in, bytes out. A later profile lives beside this
module and offers the same kinds of calls.
"""

import struct
from collections.abc import Callable
from typing import cast

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.addresses import Address, decode_address_untrusted, encode_address
from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import (
    ClientBound,
    ClientKey,
    DisconnectRequest,
    FragmentReceived,
    FragmentsUnread,
    Ignored,
    Keepalive,
    KeyRequest,
    PeerJoined,
    PeerLeft,
    RelayBound,
    RelayedMessage,
    ServerKey,
)
from mcrelay.protocol.legacy.fragments import (
    FRAGMENT_HEADER,
    FRAGMENT_SIZE,
    MAX_FRAGMENTS,
    MSG_ID_BYTES,
    decode_fragment_untrusted,
    encode_fragment,
    split_payload,
)
from mcrelay.protocol.legacy.tlv import TLV_HEADER, TlvType, decode_tlvs_untrusted, encode_tlv

MAX_MESSAGE_BYTES = 32768
"""Largest plaintext of one message: 176 fragments with a 2048-bit relay key (fewer
bytes with a larger one: :func:`max_message_bytes`)."""
MAX_UDP_PAYLOAD = 65507
CONNECT_WORD = b"CONNECT"
DISCONNECT_WORD = b"DISCONNECT"

_CLIENT_BOUND: dict[int, Callable[[bytes], ClientBound]] = {
    TlvType.SERVER_PUBLIC_KEY: ServerKey,
    TlvType.CLIENT_CONNECTED: lambda value: PeerJoined(decode_address_untrusted(value)),
    TlvType.CLIENT_DISCONNECTED: lambda value: PeerLeft(decode_address_untrusted(value)),
}


_FRAGMENT, _KEY, _KEY_REQUEST, _DISCONNECT, _KEEPALIVE = (
    int(TlvType.FRAGMENT),
    int(TlvType.CLIENT_PUBLIC_KEY),
    int(TlvType.SERVER_KEY_REQUEST),
    int(TlvType.DISCONNECT),
    int(TlvType.KEEPALIVE),
)
_ACTED_ON = frozenset((_FRAGMENT, _KEY, _KEY_REQUEST, _DISCONNECT, _KEEPALIVE))
"""The types the relay acts on, as plain ints (an IntEnum, compared a TLV at a time,
cost the scan of a datagram of empty TLVs a third more)."""


def decode_client_datagram_untrusted(
    data: bytes, *, unregistered: bool = False
) -> list[RelayBound]:
    """Events in a datagram a client sent to the relay; malformed means nothing is acted on.

    ``unregistered``: its source is not registered, so its FRAGMENTs before any key
    are only counted (one :class:`FragmentsUnread` where the first was), their values
    not read beyond their length (a FRAGMENT too short for its header still makes the
    datagram malformed).

    Every TLV is read, to the end (the framing may break anywhere), but a datagram of
    thousands of TLVs costs a scan, not thousands of events: the events leave the relay
    where acting on every TLV in order would, without what would only repeat an effect
    (docs/protocol.md, "TLV framing"). In datagram order: each FRAGMENT; the first
    SERVER_KEY_REQUEST and the first KEEPALIVE; one :class:`ClientKey` for each run of
    CLIENT_PUBLIC_KEYs with no FRAGMENT or DISCONNECT between them (the relay acts on
    the last one it accepts); the first DISCONNECT, and then the first after each run of
    keys (one in a row finds nothing left to remove); and one :class:`Ignored` where the
    first TLV of any other type was, counting them all.
    """
    if not data:
        raise RemoteProtocolError("empty datagram")
    unpack = TLV_HEADER.unpack_from
    end = len(data)
    events: list[RelayBound | None] = []
    wanted = set(_ACTED_ON)  # less each type once it acted, until a key makes DISCONNECT new
    keys: list[bytes] = []  # the run of keys being read, its event at keys_at
    keys_at = ignored_at = unread_at = -1
    ignored = ignored_type = type_ = length = unread = 0
    header_size = FRAGMENT_HEADER.size
    offset = 0
    try:
        while offset < end:
            type_, length = unpack(data, offset)
            start = offset + TLV_HEADER.size
            offset = start + length
            if type_ in wanted:
                if type_ == _KEY:
                    if keys_at < 0:
                        keys_at, keys = len(events), []
                        events.append(None)  # the run's event, once it is complete
                        wanted.add(_DISCONNECT)
                        unregistered = False  # it may register: what follows is read
                    keys.append(data[start:offset])
                    continue
                if keys_at >= 0 and type_ in (_FRAGMENT, _DISCONNECT):
                    events[keys_at] = ClientKey(keys[-1], tuple(keys[:-1]))
                    keys_at = -1
                if type_ == _FRAGMENT:
                    if not unregistered:
                        value = data[start:offset]
                        events.append(FragmentReceived(decode_fragment_untrusted(value)))
                    elif length < header_size:
                        raise RemoteProtocolError(f"FRAGMENT value of {length} bytes")
                    else:
                        if not unread:
                            unread_at = len(events)
                            events.append(None)
                        unread += 1
                    continue
                wanted.discard(type_)
                if type_ == _DISCONNECT:
                    events.append(DisconnectRequest())
                else:
                    events.append(KeyRequest() if type_ == _KEY_REQUEST else Keepalive())
            elif type_ not in _ACTED_ON:
                if not ignored:
                    ignored_at, ignored_type = len(events), type_
                    events.append(None)
                ignored += 1
    except struct.error:
        raise RemoteProtocolError(f"TLV header cut short at byte {offset}") from None
    if offset > end:
        raise RemoteProtocolError(
            f"TLV type {type_} claims {length} bytes, {end - offset + length} remain"
        )
    if keys_at >= 0:
        events[keys_at] = ClientKey(keys[-1], tuple(keys[:-1]))
    if ignored:
        events[ignored_at] = Ignored(ignored_type, ignored)
    if unread:
        events[unread_at] = FragmentsUnread(unread)
    return [event for event in events if event is not None]


_LONE_FRAGMENT = struct.Struct(f"{TLV_HEADER.format}{MSG_ID_BYTES}s")
"""A TLV's header and the msg_id that starts a FRAGMENT's value, in one unpack (a slice
after the header's unpack cost the look 0.13 us more, 8 %)."""


def lone_fragment_msg_id(data: bytes) -> bytes | None:
    """The msg_id of a datagram that is one FRAGMENT TLV and nothing else, read without
    decoding it; ``None`` for any other datagram. Where this gives a msg_id,
    :func:`decode_client_datagram_untrusted` gives that fragment alone (a cheap first look
    for the relay, which drops most fragments of a message it refused on this alone)."""
    if len(data) < TLV_HEADER.size + FRAGMENT_HEADER.size:
        return None
    type_, length, msg_id = _LONE_FRAGMENT.unpack_from(data)
    if type_ != TlvType.FRAGMENT or length != len(data) - TLV_HEADER.size:
        return None
    return cast(bytes, msg_id)


def decode_relay_datagram_untrusted(data: bytes) -> list[ClientBound]:
    """Events in a datagram the relay sent to a client.

    RELAYED_MESSAGE takes its sender from the SENDER_INFO before it in the same
    datagram; one without a SENDER_INFO makes the datagram malformed.
    """
    events: list[ClientBound] = []
    sender: Address | None = None
    # As many as the datagram holds: the page puts no bound, and a page relay may send
    # the roster (one CLIENT_CONNECTED a member) in one datagram.
    for tlv in decode_tlvs_untrusted(data, len(data) // TLV_HEADER.size + 1):
        if tlv.type == TlvType.SENDER_INFO:
            sender = decode_address_untrusted(tlv.value)
        elif tlv.type == TlvType.RELAYED_MESSAGE:
            if sender is None:
                raise RemoteProtocolError("RELAYED_MESSAGE without SENDER_INFO")
            events.append(RelayedMessage(sender, tlv.value))
        else:
            decode = _CLIENT_BOUND.get(tlv.type)
            events.append(decode(tlv.value) if decode else Ignored(tlv.type))
    return events


def key_request() -> bytes:
    return encode_tlv(TlvType.SERVER_KEY_REQUEST)


def client_key(key: rsa.RSAPublicKey) -> bytes:
    return encode_tlv(TlvType.CLIENT_PUBLIC_KEY, crypto.public_key_to_pem(key))


def server_key(key: rsa.RSAPublicKey) -> bytes:
    return encode_tlv(TlvType.SERVER_PUBLIC_KEY, crypto.public_key_to_pem(key))


def keepalive() -> bytes:
    return encode_tlv(TlvType.KEEPALIVE)


def disconnect() -> bytes:
    return encode_tlv(TlvType.DISCONNECT)


def peer_joined(peer: Address) -> bytes:
    return encode_tlv(TlvType.CLIENT_CONNECTED, encode_address(peer))


def peer_left(peer: Address) -> bytes:
    return encode_tlv(TlvType.CLIENT_DISCONNECTED, encode_address(peer))


def max_message_bytes(relay_key: rsa.RSAPublicKey) -> int:
    """Largest plaintext a message to this relay key may have: 32,768 bytes with a
    2048-bit key; with a larger one, what 190-byte chunks in the larger blocks fit in
    176 fragments (22,040 bytes at 3,072 bits, 16,530 at 4,096: a page problem, see
    docs/protocol.md)."""
    block_tlv = TLV_HEADER.size + crypto.block_bytes(relay_key)
    blocks = MAX_FRAGMENTS * FRAGMENT_SIZE // block_tlv
    return min(MAX_MESSAGE_BYTES, blocks * crypto.CHUNK_BYTES)


def message_datagrams(relay_key: rsa.RSAPublicKey, plaintext: bytes, msg_id: bytes) -> list[bytes]:
    """Encrypt a message for the relay and cut it into FRAGMENT datagrams."""
    largest = max_message_bytes(relay_key)
    if len(plaintext) > largest:
        bits = (
            ""
            if largest == MAX_MESSAGE_BYTES
            else f" with the relay's {relay_key.key_size}-bit key"
        )
        raise LocalProtocolError(f"message of {len(plaintext)} bytes; at most {largest}{bits}")
    payload = b"".join(
        encode_tlv(TlvType.ENCRYPTED_BLOCK, block)
        for block in crypto.encrypt_blocks(relay_key, plaintext)
    )
    return [encode_fragment(fragment) for fragment in split_payload(payload, msg_id)]


def decrypt_payload_untrusted(
    relay_key: rsa.RSAPrivateKey, payload: bytes, max_message_bytes: int = MAX_MESSAGE_BYTES
) -> bytes:
    """Plaintext of a reassembled payload: ENCRYPTED_BLOCK TLVs only, each one OAEP block.

    A payload with more blocks than ``max_message_bytes`` needs is refused before
    any decryption (``too_large``), so its cost is bounded."""
    max_blocks = max(1, -(-max_message_bytes // crypto.CHUNK_BYTES))
    try:
        tlvs = decode_tlvs_untrusted(payload, max_blocks)
    except RemoteProtocolError as exc:
        if exc.reason is DropReason.TOO_LARGE:
            raise RemoteProtocolError(f"over {max_blocks} blocks", DropReason.TOO_LARGE) from None
        raise RemoteProtocolError(f"payload: {exc}", DropReason.BAD_PAYLOAD) from None
    if any(tlv.type != TlvType.ENCRYPTED_BLOCK for tlv in tlvs):
        raise RemoteProtocolError(
            "payload holds a TLV other than ENCRYPTED_BLOCK", DropReason.BAD_PAYLOAD
        )
    return b"".join(crypto.decrypt_block_untrusted(relay_key, tlv.value) for tlv in tlvs)


def relayed_size(recipient_key: rsa.RSAPublicKey, sender: Address, plaintext_bytes: int) -> int:
    """Bytes of :func:`relayed_message` output, computed without encrypting."""
    ciphertext = crypto.encrypted_size(recipient_key, plaintext_bytes)
    return 2 * TLV_HEADER.size + len(encode_address(sender)) + ciphertext


def relayed_message(recipient_key: rsa.RSAPublicKey, sender: Address, plaintext: bytes) -> bytes:
    """SENDER_INFO(sender) + RELAYED_MESSAGE(blocks for the recipient), one datagram."""
    ciphertext = b"".join(crypto.encrypt_blocks(recipient_key, plaintext))
    return encode_tlv(TlvType.SENDER_INFO, encode_address(sender)) + encode_tlv(
        TlvType.RELAYED_MESSAGE, ciphertext
    )


def max_fragments(relay_key: rsa.RSAPublicKey, max_message_bytes: int) -> int:
    """Fragments the largest allowed message takes with this relay key (never above 176)."""
    blocks = max(1, -(-max_message_bytes // crypto.CHUNK_BYTES))
    payload = blocks * (TLV_HEADER.size + crypto.block_bytes(relay_key))
    return min(MAX_FRAGMENTS, -(-payload // FRAGMENT_SIZE))
