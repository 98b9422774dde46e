"""Keys as text: base64 both ways, client ids, authorized-keys lines and files."""

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.secure.keys import (
    PRIVATE_KEY_TEXT_ERROR,
    WEAK_PRIVATE_KEY_ERROR,
    AuthorizedKey,
    KeyPair,
    KeyTextError,
    LineError,
    client_id,
    decode_key,
    encode_key,
    parse_authorized_key,
    parse_authorized_keys,
    parse_client_id,
    parse_private_key_text,
    private_key_text,
)

from .conftest import SECURE_VECTORS

INPUTS = SECURE_VECTORS["inputs"]
PUBLIC = SECURE_VECTORS["public_keys"]
RELAY_PUBLIC = bytes.fromhex(PUBLIC["relay_static"])
CLIENT_PUBLIC = bytes.fromhex(PUBLIC["client_static"])
RELAY_TEXT = PUBLIC["relay_static_base64"]
CLIENT_TEXT = encode_key(CLIENT_PUBLIC)


def test_vector_keys() -> None:
    relay = KeyPair.from_private(bytes.fromhex(INPUTS["relay_static_private"]))
    assert relay.public == RELAY_PUBLIC
    assert encode_key(relay.public) == RELAY_TEXT
    assert decode_key(RELAY_TEXT) == RELAY_PUBLIC
    assert client_id(CLIENT_PUBLIC) == PUBLIC["client_id"]
    assert parse_client_id(PUBLIC["client_id"]) == CLIENT_PUBLIC


def test_the_private_key_never_shows() -> None:
    pair = KeyPair.generate(lambda n: b"\x42" * n)
    assert pair == KeyPair.from_private(b"\x42" * 32)
    assert "private" not in repr(pair)
    assert "4242" not in repr(pair)


def test_a_private_key_file_holds_the_base64_and_a_newline() -> None:
    private = bytes.fromhex(INPUTS["relay_static_private"])
    pair = KeyPair.from_private(private)
    text = private_key_text(pair)
    assert text == base64.b64encode(private) + b"\n"
    assert parse_private_key_text(text) == pair
    assert parse_private_key_text(b"\r\n " + text.strip() + b" \r\n") == pair


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=60)
    | st.binary(min_size=32, max_size=32).map(lambda key: base64.b64encode(key)[:-1])
)
def test_a_private_key_file_is_a_key_or_an_error_that_never_quotes_it(data: bytes) -> None:
    try:
        pair = parse_private_key_text(data)
    except KeyTextError as error:
        message = str(error)
    else:
        assert private_key_text(pair).decode().strip() == data.decode("ascii").strip()
        return
    assert message in (PRIVATE_KEY_TEXT_ERROR, WEAK_PRIVATE_KEY_ERROR)


@pytest.mark.parametrize(
    "private",
    [bytes(32), bytes([7]) + bytes(30) + bytes([0x80]), bytes(31) + bytes([0x40])],
    ids=["zero", "zero-once-clamped", "clamped-zero"],
)
def test_a_private_key_with_no_secret_bits_is_refused(private: bytes) -> None:
    """An all-zero key (base64 AAAA...=) was taken as the relay's: its public key is
    2**254 times the base point, which anyone computes (found by review)."""
    with pytest.raises(KeyTextError) as caught:
        parse_private_key_text(base64.b64encode(private) + b"\n")
    assert str(caught.value) == WEAK_PRIVATE_KEY_ERROR
    assert KeyPair.from_private(private).public == KeyPair.from_private(bytes(32)).public
    one_bit = bytes([8]) + private[1:]
    assert parse_private_key_text(base64.b64encode(one_bit)) == KeyPair.from_private(one_bit)


def test_surrounding_whitespace_is_ignored() -> None:
    assert decode_key(f"  {RELAY_TEXT}\n") == RELAY_PUBLIC


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("", "44 characters", id="empty"),
        pytest.param(RELAY_TEXT[:-1], "has 43", id="short"),
        pytest.param(RELAY_TEXT + "A", "has 45", id="long"),
        pytest.param(RELAY_TEXT[:-1] + "A", "not the base64 of a 32-byte key", id="no padding"),
        pytest.param(RELAY_TEXT[:-2] + "j=", "not the base64 of a 32-byte key", id="non-canonical"),
        pytest.param("*" + RELAY_TEXT[1:], "not base64", id="bad character"),
        pytest.param("é" + RELAY_TEXT[1:], "not base64", id="non-ASCII"),
        pytest.param(base64.b64encode(bytes(33)).decode()[:44], "not the base64", id="33 bytes"),
        pytest.param("x" * 500, "...", id="shown cut"),
    ],
)
def test_bad_key_text_is_one_clear_line(text: str, says: str) -> None:
    with pytest.raises(KeyTextError) as raised:
        decode_key(text)
    message = str(raised.value)
    assert says in message
    assert "\n" not in message
    assert len(message) < 150
    assert isinstance(raised.value, ValueError)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_keys_round_trip_through_text(key: bytes) -> None:
    assert decode_key(encode_key(key)) == key
    assert len(encode_key(key)) == 44
    assert parse_client_id(client_id(key)) == key
    assert len(client_id(key)) == 45


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_key_or_one_error(text: str) -> None:
    try:
        key = decode_key(text)
    except KeyTextError:
        return
    assert encode_key(key) == text.strip()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_client_id_or_one_error(text: str) -> None:
    try:
        key = parse_client_id(text)
    except KeyTextError:
        return
    assert client_id(key) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        PUBLIC["client_id"][2:],
        "K:" + PUBLIC["client_id"][2:],
        PUBLIC["client_id"] + "=",
        PUBLIC["client_id"][:-1] + "+",
        PUBLIC["client_id"][:-1] + "p",  # non-canonical: the last character's low bits set
    ],
)
def test_bad_client_ids(text: str) -> None:
    with pytest.raises(KeyTextError, match="not a client id"):
        parse_client_id(text)


def test_wrong_key_sizes_are_refused() -> None:
    with pytest.raises(KeyTextError, match="32 bytes"):
        encode_key(bytes(31))
    with pytest.raises(KeyTextError, match="32 bytes"):
        client_id(bytes(33))


def test_an_authorized_key_line() -> None:
    assert parse_authorized_key(f"{CLIENT_TEXT} alice") == AuthorizedKey(CLIENT_PUBLIC, "alice")
    assert parse_authorized_key(f"  {CLIENT_TEXT}\tAlice  Smith (laptop) \r") == AuthorizedKey(
        CLIENT_PUBLIC, "Alice  Smith (laptop)"
    )


@pytest.mark.parametrize(
    ("line", "says"),
    [
        pytest.param(CLIENT_TEXT, "no name", id="no name"),
        pytest.param(f"{CLIENT_TEXT}   ", "no name", id="blank name"),
        pytest.param(f"{CLIENT_TEXT} {'n' * 129}", "at most 128", id="long name"),
        pytest.param(f"{CLIENT_TEXT} a\x1bb", "control character", id="escape in name"),
        pytest.param(f"alice {CLIENT_TEXT}", "44 characters", id="name first"),
        pytest.param("", "empty line", id="empty"),
    ],
)
def test_bad_authorized_key_lines(line: str, says: str) -> None:
    with pytest.raises(KeyTextError) as raised:
        parse_authorized_key(line)
    assert says in str(raised.value)


def test_an_authorized_keys_text_gives_entries_and_numbered_errors() -> None:
    other = encode_key(bytes(range(32)))
    text = (
        "\ufeff# the team\n"
        f"{CLIENT_TEXT} alice\r\n"
        "\n"
        "   # indented comment\n"
        "not-a-key bob\n"
        f"{other} carol\n"
        f"{CLIENT_TEXT} alice again\n"
        f"{other}"
    )
    parsed = parse_authorized_keys(text)
    assert parsed.entries == (
        AuthorizedKey(CLIENT_PUBLIC, "alice"),
        AuthorizedKey(bytes(range(32)), "carol"),
    )
    assert [error.line for error in parsed.errors] == [5, 7, 8]
    assert parsed.errors[1] == LineError(7, "key already listed on line 2")
    assert str(parsed.errors[2]) == "line 8: the key has no name (write: KEY name)"


def test_an_empty_authorized_keys_text() -> None:
    assert parse_authorized_keys("") == parse_authorized_keys("\n# none\n")
    assert parse_authorized_keys("").entries == ()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_into_entries_and_errors(text: str) -> None:
    parsed = parse_authorized_keys(text)
    lines = text.count("\n") + 1
    assert len(parsed.entries) + len(parsed.errors) <= lines
    assert all(1 <= error.line <= lines and "\n" not in error.message for error in parsed.errors)
