"""Errors and drop reasons of the wire protocol.

Bytes from the network are decoded by functions named ``*_untrusted``; those
raise :class:`RemoteProtocolError` and nothing else. :class:`LocalProtocolError`
means our own caller asked for something the protocol cannot express.
"""

from enum import StrEnum


class DropReason(StrEnum):
    """Why a datagram, a TLV or a message was not acted on. Every drop is counted."""

    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    UNREGISTERED = "unregistered"
    BANNED = "banned"
    BAD_KEY = "bad_key"
    REGISTRY_FULL = "registry_full"
    RATE_LIMITED = "rate_limited"
    INVALID_FRAGMENT = "invalid_fragment"
    DUPLICATE_FRAGMENT = "duplicate_fragment"
    LATE_FRAGMENT = "late_fragment"
    SOURCE_LIMIT = "source_limit"
    BUFFER_LIMIT = "buffer_limit"
    REASSEMBLY_TIMEOUT = "reassembly_timeout"
    REASSEMBLY_EVICTED = "reassembly_evicted"
    BAD_PAYLOAD = "bad_payload"
    DECRYPT_FAILED = "decrypt_failed"
    TOO_LARGE = "too_large"
    OVERLOADED = "overloaded"
    DATAGRAM_TOO_LARGE = "datagram_too_large"
    ENCRYPT_FAILED = "encrypt_failed"
    INTERNAL_ERROR = "internal_error"
    SEND_QUEUE_FULL = "send_queue_full"
    SEND_FAILED = "send_failed"
    NOT_FROM_RELAY = "not_from_relay"
    DUPLICATE_MESSAGE = "duplicate_message"
    STOPPED = "stopped"
    NEVER_REGISTERED = "never_registered"
    # protocol/secure: data.py, replay.py, messages.py (DATA, replay window, message bodies)
    REPLAYED = "replayed"
    COUNTER_TOO_OLD = "counter_too_old"
    COUNTER_LIMIT = "counter_limit"
    UNKNOWN_KIND = "unknown_kind"
    NOTICE_TOO_LONG = "notice_too_long"
    # protocol/secure: noise.py, handshake.py, cookies.py, admission.py (before a session)
    BAD_MAC1 = "bad_mac1"
    COOKIE_REQUIRED = "cookie_required"
    HANDSHAKE_FAILED = "handshake_failed"
    STALE_TIMESTAMP = "stale_timestamp"
    UNKNOWN_INDEX = "unknown_index"
    KEY_QUERY_LIMIT = "key_query_limit"
    # protocol/secure: sending.py, receiving.py (the reliable message channel)
    BACKPRESSURE = "backpressure"
    MESSAGE_WINDOW = "message_window"
    ABANDONED = "abandoned"
    UNREACHABLE = "unreachable"
    REPLACED = "replaced"
    STALE_EPOCH = "stale_epoch"
    INVALID_ACK = "invalid_ack"
    TOO_MANY_FRAMES = "too_many_frames"
    # protocol/secure: keypairs.py, session.py (a session's DATA)
    KEYPAIR_EXPIRED = "keypair_expired"
    # daemon: the relay serving both profiles (daemon/relay.py, daemon/secure/)
    UNAUTHORIZED = "unauthorized"
    SECURE_ADDRESS = "secure_address"
    ADDRESS_IN_USE = "address_in_use"
    DISPLACED = "displaced"
    OWN_ADDRESS = "own_address"
    PROFILE_OFF = "profile_off"
    STALLED = "stalled"
    # protocol/federation: envelope.py, bodies.py, streams.py (envelopes between relays)
    BAD_ENVELOPE = "bad_envelope"
    ENVELOPE_VERSION = "envelope_version"
    ENVELOPE_AUTH = "envelope_auth"
    ENVELOPE_REPLAY = "envelope_replay"
    ENVELOPE_STALE = "envelope_stale"
    ENVELOPE_UNVERIFIED = "envelope_unverified"
    ENVELOPE_TOO_LARGE = "envelope_too_large"


class ProtocolError(Exception):
    """Base of the protocol's errors."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the wire rules; ``reason`` says how to count it."""

    def __init__(self, message: str, reason: DropReason = DropReason.MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type["RemoteProtocolError"], tuple[str, DropReason]]:
        """Pickled with its reason (a crypto worker's answer crosses a pipe)."""
        return type(self), (str(self), self.reason)


class LocalProtocolError(ProtocolError):
    """We asked the protocol for something it cannot express (a caller's bug or bad input)."""
