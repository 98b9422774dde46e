"""Message bodies: the vectors' messages both ways, and each decoder's refusals."""

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.crypto import key_digest
from mcrelay.protocol.secure.frames import Fragment, decode_frames_untrusted
from mcrelay.protocol.secure.messages import (
    MAX_CHAT_BYTES,
    MAX_NOTICE_TEXT_BYTES,
    Chat,
    Disconnect,
    LeaveReason,
    Message,
    Notice,
    NoticeCode,
    Presence,
    PresenceEvent,
    RelayedChat,
    decode_client_message_untrusted,
    decode_relay_message_untrusted,
    encode_message,
)
from mcrelay.protocol.secure.origins import RELAY_ORIGIN, Origin, OriginKind

from .conftest import SECURE_VECTORS

INPUTS = SECURE_VECTORS["inputs"]


def address(name: str) -> Address:
    host, port = INPUTS[name]
    return (host, port)


OTHER = Origin(
    OriginKind.SECURE_CLIENT,
    bytes.fromhex(INPUTS["other_client_static_public"]),
    address("other_address"),
)
LEGACY = Origin(
    OriginKind.LEGACY_CLIENT,
    bytes.fromhex(INPUTS["legacy_rsa_spki_sha256"]),
    address("legacy_address"),
)
CLIENT = Origin(
    OriginKind.SECURE_CLIENT,
    bytes.fromhex(SECURE_VECTORS["public_keys"]["client_static"]),
    address("client_address"),
)

EXPECTED: dict[str, tuple[str, int, Message]] = {
    'CHAT c->r "hello", msg_seq 0': ("c->r", 0, Chat(b"hello")),
    "CHAT c->r empty text, msg_seq 1": ("c->r", 1, Chat(b"")),
    "CHAT c->r 1,200 bytes, msg_seq 2, fragment 0 of 2": (
        "c->r",
        2,
        Chat(bytes(i * 7 % 256 for i in range(1200))),
    ),
    "DISCONNECT c->r, msg_seq 3": ("c->r", 3, Disconnect()),
    "PRESENCE r->c already present (other secure client), msg_seq 0": (
        "r->c",
        0,
        Presence(PresenceEvent.ALREADY_PRESENT, OTHER),
    ),
    "PRESENCE r->c joined (legacy client), msg_seq 1": (
        "r->c",
        1,
        Presence(PresenceEvent.JOINED, LEGACY),
    ),
    'CHAT r->c from a secure client "hi", msg_seq 2': ("r->c", 2, RelayedChat(OTHER, b"hi")),
    'CHAT r->c from the relay "maintenance", msg_seq 3': (
        "r->c",
        3,
        RelayedChat(RELAY_ORIGIN, b"maintenance"),
    ),
    'CHAT r->c from a legacy client "old", msg_seq 4': ("r->c", 4, RelayedChat(LEGACY, b"old")),
    "PRESENCE r->c left (timeout), msg_seq 5": (
        "r->c",
        5,
        Presence(PresenceEvent.LEFT, OTHER, LeaveReason.TIMEOUT),
    ),
    "PRESENCE r->c left (ban), msg_seq 6": (
        "r->c",
        6,
        Presence(PresenceEvent.LEFT, LEGACY, LeaveReason.BAN),
    ),
    "NOTICE r->c kicked, msg_seq 7": ("r->c", 7, Notice(NoticeCode.KICKED, b"kicked")),
    "NOTICE r->c banned, msg_seq 8": ("r->c", 8, Notice(NoticeCode.BANNED, b"banned")),
    "NOTICE r->c shutting down, msg_seq 9": ("r->c", 9, Notice(NoticeCode.SHUTTING_DOWN, b"bye")),
    "NOTICE r->c replaced, msg_seq 10": ("r->c", 10, Notice(NoticeCode.REPLACED, b"replaced")),
    "ACK r->c of client msg_seq 0 + CHAT r->c msg_seq 11 in one DATA": (
        "r->c",
        11,
        RelayedChat(CLIENT, b"x"),
    ),
    "PRESENCE r->c left (unreachable), msg_seq 12": (
        "r->c",
        12,
        Presence(PresenceEvent.LEFT, OTHER, LeaveReason.UNREACHABLE),
    ),
}


def vector_messages() -> dict[str, tuple[str, int, bytes]]:
    """Each message in the DATA vectors, by the name of the vector holding its first
    fragment: its direction, msg_seq and body (the fragments' data joined)."""
    pieces: dict[tuple[str, int], dict[int, Fragment]] = {}
    names: dict[tuple[str, int], str] = {}
    for vector in SECURE_VECTORS["data"]:
        for frame in decode_frames_untrusted(bytes.fromhex(vector["plaintext"])).frames:
            if isinstance(frame, Fragment):
                key = (vector["direction"], frame.msg_seq)
                pieces.setdefault(key, {})[frame.index] = frame
                if frame.index == 0:
                    names[key] = vector["name"]
    found = {}
    for key, fragments in pieces.items():
        counts = {fragment.count for fragment in fragments.values()}
        assert counts == {len(fragments)}, key
        body = b"".join(fragments[index].data for index in range(len(fragments)))
        found[names[key]] = (*key, body)
    return found


VECTOR_MESSAGES = vector_messages()


def decode(direction: str, body: bytes) -> Message:
    if direction == "c->r":
        return decode_client_message_untrusted(body)
    return decode_relay_message_untrusted(body)


def test_every_vector_message_is_expected() -> None:
    assert set(VECTOR_MESSAGES) == set(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_vector_message_decodes_and_encodes_back(name: str) -> None:
    direction, msg_seq, message = EXPECTED[name]
    assert VECTOR_MESSAGES[name][:2] == (direction, msg_seq)
    body = VECTOR_MESSAGES[name][2]
    assert decode(direction, body) == message
    assert encode_message(message) == body


def test_the_legacy_origin_id_is_the_sha256_of_the_spki(vectors: dict[str, Any]) -> None:
    key = crypto.load_private_key_pem(vectors["keys"]["client_private_pem"].encode()).public_key()
    digest = base64.b64encode(key_digest(key)).decode().rstrip("=")
    assert crypto.fingerprint(key) == f"SHA256:{digest}"
    assert len(key_digest(key)) == 32


def test_a_notice_with_invalid_utf8_is_kept_and_shown_replaced() -> None:
    body = b"\x03\x03\x00bye \xff\xfe"
    notice = decode_relay_message_untrusted(body)
    assert notice == Notice(NoticeCode.SHUTTING_DOWN, b"bye \xff\xfe")
    assert isinstance(notice, Notice)
    assert notice.readable_text == "bye \ufffd\ufffd"
    assert encode_message(notice) == body


def test_the_largest_texts_pass_and_one_byte_more_does_not() -> None:
    chat = b"\x01" + bytes(MAX_CHAT_BYTES)
    assert decode_client_message_untrusted(chat) == Chat(bytes(MAX_CHAT_BYTES))
    relayed = encode_message(RelayedChat(OTHER, bytes(MAX_CHAT_BYTES)))
    assert decode_relay_message_untrusted(relayed) == RelayedChat(OTHER, bytes(MAX_CHAT_BYTES))
    notice = b"\x03\x01\x00" + b"k" * MAX_NOTICE_TEXT_BYTES
    assert decode_relay_message_untrusted(notice) == Notice(
        NoticeCode.KICKED, b"k" * MAX_NOTICE_TEXT_BYTES
    )
    for decoder, body, reason in [
        (decode_client_message_untrusted, chat + b"!", DropReason.TOO_LARGE),
        (decode_relay_message_untrusted, relayed + b"!", DropReason.TOO_LARGE),
        (decode_relay_message_untrusted, notice + b"!", DropReason.NOTICE_TOO_LONG),
    ]:
        with pytest.raises(RemoteProtocolError) as refused:
            decoder(body)
        assert refused.value.reason is reason


@pytest.mark.parametrize(
    ("body", "client_reason", "relay_reason"),
    [
        pytest.param(b"", DropReason.MALFORMED, DropReason.MALFORMED, id="empty"),
        pytest.param(b"\x00", DropReason.UNKNOWN_KIND, DropReason.UNKNOWN_KIND, id="kind 0"),
        pytest.param(b"\x05x", DropReason.UNKNOWN_KIND, DropReason.UNKNOWN_KIND, id="kind 5"),
        pytest.param(b"\xff", DropReason.UNKNOWN_KIND, DropReason.UNKNOWN_KIND, id="kind 255"),
        pytest.param(
            encode_message(Presence(PresenceEvent.JOINED, OTHER)),
            DropReason.UNKNOWN_KIND,
            None,
            id="PRESENCE from a client",
        ),
        pytest.param(
            encode_message(Notice(NoticeCode.KICKED, b"")),
            DropReason.UNKNOWN_KIND,
            None,
            id="NOTICE from a client",
        ),
        pytest.param(b"\x04", None, DropReason.UNKNOWN_KIND, id="DISCONNECT from the relay"),
        pytest.param(b"\x04\x00", DropReason.MALFORMED, DropReason.UNKNOWN_KIND, id="DISCONNECT+1"),
    ],
)
def test_kinds_are_refused_where_their_direction_does_not_carry_them(
    body: bytes, client_reason: DropReason | None, relay_reason: DropReason | None
) -> None:
    for decoder, reason in [
        (decode_client_message_untrusted, client_reason),
        (decode_relay_message_untrusted, relay_reason),
    ]:
        if reason is None:
            decoder(body)
            continue
        with pytest.raises(RemoteProtocolError) as refused:
            decoder(body)
        assert refused.value.reason is reason


OTHER_ORIGIN = encode_message(RelayedChat(OTHER, b""))[1:]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x01" + OTHER_ORIGIN[:-1], id="CHAT origin cut short"),
        pytest.param(b"\x01\x01" + bytes(32), id="CHAT origin without addr_len"),
        pytest.param(b"\x01\x03" + OTHER_ORIGIN[1:], id="origin kind 3"),
        pytest.param(b"\x01\x00" + b"\x01" + bytes(31) + b"\x00", id="relay origin with an id"),
        pytest.param(b"\x01\x00" + bytes(32) + b"\x06" + bytes(6), id="relay origin with address"),
        pytest.param(b"\x01\x01" + bytes(32) + b"\x00", id="client origin without address"),
        pytest.param(b"\x01\x02" + bytes(32) + b"\x04" + bytes(4), id="address of 4 bytes"),
        pytest.param(b"\x01\x01" + bytes(32) + b"\x12" + bytes(17), id="IPv6 address cut short"),
        pytest.param(b"\x02\x01", id="PRESENCE cut before its reason"),
        pytest.param(b"\x02\x01\x00" + OTHER_ORIGIN + b"\x00", id="PRESENCE with a byte more"),
        pytest.param(b"\x02\x00\x00" + OTHER_ORIGIN, id="PRESENCE event 0"),
        pytest.param(b"\x02\x04\x00" + OTHER_ORIGIN, id="PRESENCE event 4"),
        pytest.param(b"\x02\x01\x01" + OTHER_ORIGIN, id="joined with a reason"),
        pytest.param(b"\x02\x03\x02" + OTHER_ORIGIN, id="already present with a reason"),
        pytest.param(b"\x02\x02\x00" + OTHER_ORIGIN, id="left without a reason"),
        pytest.param(b"\x02\x02\x06" + OTHER_ORIGIN, id="left for reason 6"),
        pytest.param(b"\x03\x01", id="NOTICE cut inside its code"),
        pytest.param(b"\x03\x00\x00hi", id="NOTICE code 0"),
        pytest.param(b"\x03\x05\x00hi", id="NOTICE code 5"),
        pytest.param(b"\x03\x01\x01hi", id="NOTICE code 257"),
    ],
)
def test_malformed_relay_messages_are_refused(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as refused:
        decode_relay_message_untrusted(body)
    assert refused.value.reason is DropReason.MALFORMED


@pytest.mark.parametrize(
    "build",
    [
        lambda: Chat(bytes(MAX_CHAT_BYTES + 1)),
        lambda: RelayedChat(OTHER, bytes(MAX_CHAT_BYTES + 1)),
        lambda: Notice(NoticeCode.KICKED, bytes(MAX_NOTICE_TEXT_BYTES + 1)),
        lambda: Notice(5, b""),  # type: ignore[arg-type]
        lambda: Presence(PresenceEvent.LEFT, OTHER),
        lambda: Presence(PresenceEvent.JOINED, OTHER, LeaveReason.KICK),
        lambda: Presence(4, OTHER),  # type: ignore[arg-type]
        lambda: Origin(OriginKind.RELAY, bytes(32), ("127.0.0.1", 1)),
        lambda: Origin(OriginKind.RELAY, b"\x01" * 32, None),
        lambda: Origin(OriginKind.SECURE_CLIENT, bytes(32), None),
        lambda: Origin(OriginKind.LEGACY_CLIENT, bytes(31), ("127.0.0.1", 1)),
        lambda: Origin(OriginKind.SECURE_CLIENT, bytes(32), ("not an ip", 1)),
        lambda: Origin(OriginKind.SECURE_CLIENT, bytes(32), ("127.0.0.1", 65536)),
        lambda: Origin(3, bytes(32), ("127.0.0.1", 1)),  # type: ignore[arg-type]
    ],
)
def test_messages_validate_on_construction(build: Any) -> None:
    with pytest.raises(LocalProtocolError):
        build()


addresses = st.tuples(st.ip_addresses().map(str), st.integers(0, 0xFFFF))
member_origins = st.builds(
    Origin,
    st.sampled_from([OriginKind.SECURE_CLIENT, OriginKind.LEGACY_CLIENT]),
    st.binary(min_size=32, max_size=32),
    addresses,
)
origins = st.just(RELAY_ORIGIN) | member_origins
texts = st.binary(max_size=2000) | st.integers(0, 255).map(lambda b: bytes([b]) * MAX_CHAT_BYTES)
presences = st.builds(
    Presence,
    st.sampled_from([PresenceEvent.JOINED, PresenceEvent.ALREADY_PRESENT]),
    origins,
) | st.builds(
    Presence,
    st.just(PresenceEvent.LEFT),
    origins,
    st.sampled_from([r for r in LeaveReason if r is not LeaveReason.NONE]),
)
notices = st.builds(Notice, st.sampled_from(NoticeCode), st.binary(max_size=MAX_NOTICE_TEXT_BYTES))
client_messages = st.builds(Chat, texts) | st.just(Disconnect())
relay_messages = st.builds(RelayedChat, origins, texts) | presences | notices


@settings(max_examples=300, deadline=None)
@given(client_messages)
def test_client_messages_round_trip(message: Message) -> None:
    assert decode_client_message_untrusted(encode_message(message)) == message


@settings(max_examples=300, deadline=None)
@given(relay_messages)
def test_relay_messages_round_trip(message: Message) -> None:
    assert decode_relay_message_untrusted(encode_message(message)) == message


def bodies() -> st.SearchStrategy[bytes]:
    """Any bytes, and bytes that start as a known kind (and an origin kind) would."""
    head = st.sampled_from([b"", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"])
    origin_head = st.sampled_from([b"", b"\x00", b"\x01", b"\x02", b"\x03"])
    tail = st.binary(max_size=120)
    return st.binary(max_size=200) | st.builds(
        lambda *parts: b"".join(parts), head, origin_head, tail
    )


def mutations(body: bytes) -> st.SearchStrategy[bytes]:
    """``body`` cut short, with one byte changed, or with bytes after it."""
    position = st.integers(0, len(body) - 1)
    return st.one_of(
        position.map(lambda cut: body[:cut]),
        st.tuples(position, st.integers(0, 255)).map(
            lambda change: body[: change[0]] + bytes([change[1]]) + body[change[0] + 1 :]
        ),
        st.binary(min_size=1, max_size=4).map(body.__add__),
    )


@settings(max_examples=1000, deadline=None)
@given(bodies() | client_messages.map(encode_message).flatmap(mutations))
def test_any_body_from_a_client_decodes_exactly_or_is_refused(body: bytes) -> None:
    try:
        message = decode_client_message_untrusted(body)
    except RemoteProtocolError:
        return
    assert encode_message(message) == body


@settings(max_examples=1000, deadline=None)
@given(bodies() | relay_messages.map(encode_message).flatmap(mutations))
def test_any_body_from_the_relay_decodes_exactly_or_is_refused(body: bytes) -> None:
    try:
        message = decode_relay_message_untrusted(body)
    except RemoteProtocolError:
        return
    assert encode_message(message) == body
