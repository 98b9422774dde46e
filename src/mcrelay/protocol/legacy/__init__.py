"""The legacy wire profile (the seed protocol), sans-I/O: datagrams to events and back.

Its normative description is ``docs/protocol.md`` (after ``legacy-wire.md``). The
pieces: TLV framing (``tlv``), FRAGMENT values (``fragments``), the events a
datagram holds (``events``), RSA-OAEP blocks and keys (``crypto``), and the
datagrams themselves (``wire``), whose calls this package offers directly::

    from mcrelay.protocol import legacy
    legacy.decode_client_datagram_untrusted(data)
"""

from mcrelay.protocol.legacy.wire import (
    CONNECT_WORD,
    DISCONNECT_WORD,
    MAX_MESSAGE_BYTES,
    MAX_UDP_PAYLOAD,
    client_key,
    decode_client_datagram_untrusted,
    decode_relay_datagram_untrusted,
    decrypt_payload_untrusted,
    disconnect,
    keepalive,
    key_request,
    lone_fragment_msg_id,
    max_fragments,
    max_message_bytes,
    message_datagrams,
    peer_joined,
    peer_left,
    relayed_message,
    relayed_size,
    server_key,
)

__all__ = [
    "CONNECT_WORD",
    "DISCONNECT_WORD",
    "MAX_MESSAGE_BYTES",
    "MAX_UDP_PAYLOAD",
    "client_key",
    "decode_client_datagram_untrusted",
    "decode_relay_datagram_untrusted",
    "decrypt_payload_untrusted",
    "disconnect",
    "keepalive",
    "key_request",
    "lone_fragment_msg_id",
    "max_fragments",
    "max_message_bytes",
    "message_datagrams",
    "peer_joined",
    "peer_left",
    "relayed_message",
    "relayed_size",
    "server_key",
]
