"""RSA-OAEP(SHA-256) blocks, peer keys and fingerprints."""

import base64
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.legacy import crypto

OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def test_constants_match_the_spec() -> None:
    assert crypto.KEY_BITS == 2048
    assert crypto.PUBLIC_EXPONENT == 65537
    assert (crypto.MIN_PEER_KEY_BITS, crypto.MAX_PEER_KEY_BITS) == (2048, 4096)


def test_block_sizes_for_2048_bits(relay_key: rsa.RSAPrivateKey) -> None:
    assert crypto.block_bytes(relay_key) == 256
    assert crypto.block_bytes(relay_key.public_key()) == 256
    assert crypto.CHUNK_BYTES == 190  # key_bytes - 2*32 - 2 at 2048 bits


@pytest.mark.parametrize(("bits", "block"), [(3072, 384), (4096, 512)])
def test_larger_keys_get_larger_blocks_of_the_same_chunks(
    synthetic_public_key: Callable[[int], rsa.RSAPublicKey], bits: int, block: int
) -> None:
    """The page cuts 190-byte chunks for every key; they were cut by the key's size
    (318, 446 bytes), so the page's relay skipped recipients ours did not (found by
    review)."""
    key = synthetic_public_key(bits)
    assert crypto.block_bytes(key) == block
    blocks = crypto.encrypt_blocks(key, bytes(1000))
    assert [len(b) for b in blocks] == [block] * 6
    assert crypto.encrypted_size(key, 1000) == 6 * block


@pytest.mark.parametrize(
    ("length", "sizes"),
    [(0, [0]), (1, [1]), (190, [190]), (191, [190, 1]), (380, [190, 190]), (381, [190, 190, 1])],
)
def test_chunk(length: int, sizes: list[int]) -> None:
    data = bytes(i % 256 for i in range(length))
    pieces = crypto.chunk(data, 190)
    assert [len(p) for p in pieces] == sizes
    assert b"".join(pieces) == data


@pytest.mark.parametrize("length", [0, 1, 190, 191, 380, 1000])
def test_encrypt_blocks_is_oaep_sha256(relay_key: rsa.RSAPrivateKey, length: int) -> None:
    plaintext = bytes(i % 256 for i in range(length))
    blocks = crypto.encrypt_blocks(relay_key.public_key(), plaintext)
    assert len(blocks) == max(1, -(-length // 190))
    assert all(len(block) == 256 for block in blocks)
    assert crypto.encrypted_size(relay_key.public_key(), length) == 256 * len(blocks)
    # Decrypted with explicitly spelled-out parameters, not with the module's own.
    assert b"".join(relay_key.decrypt(block, OAEP) for block in blocks) == plaintext
    assert crypto.decrypt_concatenated_untrusted(relay_key, b"".join(blocks)) == plaintext


def test_oaep_is_randomized(relay_key: rsa.RSAPrivateKey) -> None:
    public = relay_key.public_key()
    assert crypto.encrypt_blocks(public, b"same") != crypto.encrypt_blocks(public, b"same")


def test_decrypt_block_accepts_a_block_made_elsewhere(relay_key: rsa.RSAPrivateKey) -> None:
    block = relay_key.public_key().encrypt(b"made elsewhere", OAEP)
    assert crypto.decrypt_block_untrusted(relay_key, block) == b"made elsewhere"


def test_bad_blocks_fail_to_decrypt(
    relay_key: rsa.RSAPrivateKey, client_key: rsa.RSAPrivateKey
) -> None:
    good = crypto.encrypt_blocks(relay_key.public_key(), b"hello")[0]
    flipped = bytes([good[0] ^ 1]) + good[1:]
    for block in (
        b"",
        good[:-1],
        good + b"\x00",
        b"\x00" * 256,
        b"\xff" * 256,
        flipped,
        crypto.encrypt_blocks(client_key.public_key(), b"hello")[0],
    ):
        with pytest.raises(RemoteProtocolError) as info:
            crypto.decrypt_block_untrusted(relay_key, block)
        assert info.value.reason is DropReason.DECRYPT_FAILED


@pytest.mark.parametrize("length", [0, 1, 255, 257, 511])
def test_concatenated_must_be_whole_blocks(relay_key: rsa.RSAPrivateKey, length: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        crypto.decrypt_concatenated_untrusted(relay_key, b"\x01" * length)
    assert info.value.reason is DropReason.DECRYPT_FAILED


def test_concatenated_fails_on_any_bad_block(relay_key: rsa.RSAPrivateKey) -> None:
    blocks = crypto.encrypt_blocks(relay_key.public_key(), b"x" * 300)
    with pytest.raises(RemoteProtocolError) as info:
        crypto.decrypt_concatenated_untrusted(relay_key, blocks[0] + b"\x00" * 256)
    assert info.value.reason is DropReason.DECRYPT_FAILED


def test_peer_key_of_2048_bits_is_accepted(client_key: rsa.RSAPrivateKey) -> None:
    public = client_key.public_key()
    loaded = crypto.load_public_key_untrusted(crypto.public_key_to_pem(public))
    assert loaded.key_size == 2048
    assert crypto.same_key(loaded, public)


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_peer_key_sizes_in_range_are_accepted(
    synthetic_public_key: Callable[[int], rsa.RSAPublicKey], bits: int
) -> None:
    key = synthetic_public_key(bits)
    loaded = crypto.load_public_key_untrusted(crypto.public_key_to_pem(key))
    assert loaded.key_size == bits
    assert crypto.same_key(loaded, key)


def _assert_bad_key(pem: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        crypto.load_public_key_untrusted(pem)
    assert info.value.reason is DropReason.BAD_KEY


def test_rsa_1024_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    _assert_bad_key(crypto.public_key_to_pem(small.public_key()))


@pytest.mark.parametrize("bits", [1024, 2047, 4097, 8192])
def test_peer_key_sizes_out_of_range_are_refused(
    synthetic_public_key: Callable[[int], rsa.RSAPublicKey], bits: int
) -> None:
    _assert_bad_key(crypto.public_key_to_pem(synthetic_public_key(bits)))


def test_non_rsa_key_is_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    _assert_bad_key(
        ec_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"junk", id="junk"),
        pytest.param(b"\xff\xfe\x00" * 30, id="binary"),
        pytest.param(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", id="bad body"
        ),
        pytest.param(
            b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n", id="not base64"
        ),
        pytest.param(b"-----BEGIN PUBLIC KEY-----\n", id="cut"),
    ],
)
def test_junk_key_is_refused(pem: bytes) -> None:
    _assert_bad_key(pem)


def test_der_and_private_pem_are_refused(client_key: rsa.RSAPrivateKey) -> None:
    der = client_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _assert_bad_key(der)
    _assert_bad_key(crypto.private_key_to_pem(client_key))


def test_only_a_pem_subject_public_key_info_is_a_key(client_key: rsa.RSAPrivateKey) -> None:
    """The page's values 4 and 5 are PEM SubjectPublicKeyInfo: PKCS#1's RSA PUBLIC KEY,
    text around the block and headers inside it were taken (found by review)."""
    public = client_key.public_key()
    spki = crypto.public_key_to_pem(public)
    assert crypto.same_key(crypto.wire_public_key_untrusted(b"\n" + spki.strip()), public)
    crlf = spki.replace(b"\n", b"\r\n")
    assert crypto.same_key(crypto.wire_public_key_untrusted(crlf), public)
    pkcs1 = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    begin, rest = spki.split(b"\n", 1)
    header = begin + b"\nComment: a header OpenSSL reads\n\n" + rest
    assert crypto.same_key(crypto.load_public_key_untrusted(header), public)
    for value in (pkcs1, b"not a key\n" + spki, spki + b"\x00trailing", spki + spki, header):
        with pytest.raises(RemoteProtocolError, match="SubjectPublicKeyInfo") as info:
            crypto.wire_public_key_untrusted(value)
        assert info.value.reason is DropReason.BAD_KEY
    assert crypto.same_key(crypto.load_public_key_untrusted(pkcs1), public)  # a file's: read


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_no_wire_key_is_shorter_than_the_shortest_a_2048_bit_key_can_be(
    synthetic_public_key: Callable[[int], rsa.RSAPublicKey], bits: int
) -> None:
    """The relay refuses a value shorter than ``MIN_PEM_BYTES`` unparsed: a 2048-bit
    key with no line break is exactly that long, and is accepted; larger keys are longer."""
    begin, *lines, end = crypto.public_key_to_pem(synthetic_public_key(bits)).strip().split(b"\n")
    flat = begin + b"".join(lines) + end
    assert crypto.wire_public_key_untrusted(flat).key_size == bits
    assert (len(flat) == crypto.MIN_PEM_BYTES) == (bits == 2048)
    assert len(flat) >= crypto.MIN_PEM_BYTES


def test_oversized_pem_is_refused(client_key: rsa.RSAPrivateKey) -> None:
    pem = crypto.public_key_to_pem(client_key.public_key())
    _assert_bad_key(pem + b"\n" * (crypto.MAX_PEM_BYTES + 1 - len(pem)))


def test_same_key_compares_public_numbers(
    relay_key: rsa.RSAPrivateKey, client_key: rsa.RSAPrivateKey
) -> None:
    relay = relay_key.public_key()
    # A different PEM text (CRLF line ends) of the same key.
    pem = crypto.public_key_to_pem(relay).replace(b"\n", b"\r\n")
    assert crypto.same_key(relay, crypto.load_public_key_untrusted(pem))
    assert not crypto.same_key(relay, client_key.public_key())


def test_fingerprint_is_unpadded_base64_sha256_of_der_spki(
    relay_key: rsa.RSAPrivateKey, client_key: rsa.RSAPrivateKey
) -> None:
    public = relay_key.public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    fp = crypto.fingerprint(public)
    assert fp == expected
    body = fp.removeprefix("SHA256:")
    assert fp.startswith("SHA256:")
    assert len(body) == 43
    assert "=" not in body
    assert base64.b64decode(body + "=") == hashlib.sha256(der).digest()
    assert crypto.fingerprint(client_key.public_key()) != fp
    assert (
        crypto.fingerprint(crypto.load_public_key_untrusted(crypto.public_key_to_pem(public))) == fp
    )


def test_private_key_pem_round_trips(relay_key: rsa.RSAPrivateKey) -> None:
    pem = crypto.private_key_to_pem(relay_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = crypto.load_private_key_pem(pem)
    assert again.private_numbers() == relay_key.private_numbers()


def test_generated_key_is_2048_bit_rsa_with_e_65537() -> None:
    key = crypto.generate_private_key()
    assert key.key_size == 2048
    assert key.public_key().public_numbers().e == 65537


def test_own_key_must_be_an_unencrypted_rsa_pem_of_2048_to_4096_bits(
    relay_key: rsa.RSAPrivateKey,
) -> None:
    encrypted = relay_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    small_pem = crypto.private_key_to_pem(
        rsa.generate_private_key(public_exponent=65537, key_size=1024)
    )
    for pem in (b"", b"junk", encrypted, ec_pem, small_pem):
        with pytest.raises(LocalProtocolError):
            crypto.load_private_key_pem(pem)


def test_a_key_with_another_public_exponent_is_refused() -> None:
    # e = 2^64 + 1 on a 4096-bit modulus made OpenSSL refuse to encrypt, killing the relay.
    modulus = crypto.generate_private_key().public_key().public_numbers().n
    for exponent in (3, 2**64 + 1):
        key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        with pytest.raises(RemoteProtocolError) as caught:
            crypto.load_public_key_untrusted(crypto.public_key_to_pem(key))
        assert caught.value.reason is DropReason.BAD_KEY
