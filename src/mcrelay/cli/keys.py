"""``mcrelay keygen`` and ``mcrelay fingerprint``: keys made and identified offline.

Three kinds: the legacy profile's RSA keys (PEM), identified by their SHA-256
fingerprint; the secure profile's Curve25519 keys (one line of base64, as
WireGuard's), identified by the public key itself and the API's client id ``k:...``;
and a federation's cluster key (32 random bytes as one line of base64), a secret
every relay of the cluster holds a copy of, identified by a short fingerprint.
A secure private key file and a public key text look alike (44 characters of
base64): a bare key is taken for a private key, which must then be private to its
owner (mode 0600), and ``--public`` says it is a public key; a ``KEY name`` line (as
in an authorized-keys file) is a public key.
"""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Mapping
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.cli.environment import Environment
from mcrelay.cli.options import Parser, UsageError
from mcrelay.cli.status import ExitStatus
from mcrelay.daemon.legacy.keyfile import MAX_KEY_FILE_BYTES, KeyFileError, generate_key_file
from mcrelay.daemon.secure.keyfile import generate_secure_key_file
from mcrelay.federation.keyfile import cluster_key_fingerprint, read_cluster_key, write_cluster_key
from mcrelay.files import FileContents, FileError, read_regular_file
from mcrelay.protocol.errors import ProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.secure.keys import (
    KEY_TEXT_CHARS,
    KeyPair,
    KeyTextError,
    client_id,
    decode_key,
    encode_key,
    parse_private_key_text,
)

BASE64_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def add_parsers(subparsers: argparse._SubParsersAction[Parser], environ: Mapping[str, str]) -> None:
    keygen = subparsers.add_parser(
        "keygen",
        help="create a relay key file (mode 0600) and print its fingerprint, or with --secure "
        "a secure key file and its public key",
    )
    keygen.add_argument("path", type=Path, help="where to write it; an existing file is kept")
    keygen.add_argument(
        "--parents", action="store_true", help="create missing directories (mode 0700)"
    )
    kind = keygen.add_mutually_exclusive_group()
    kind.add_argument(
        "--secure",
        action="store_true",
        help="a Curve25519 key of the secure profile (base64 text), for the relay's "
        "--secure-key-file or a client's identity; prints its public key",
    )
    kind.add_argument(
        "--federation",
        action="store_true",
        help="a cluster key for relays that federate (32 random bytes as base64 text), for "
        "--federation-key-file; every relay of the cluster needs a copy; prints its fingerprint",
    )
    keygen.set_defaults(command=run_keygen)
    fingerprint = subparsers.add_parser(
        "fingerprint",
        help="print the fingerprint of an RSA key (PEM), or the public key and client id "
        "of a secure key",
    )
    fingerprint.add_argument(
        "path",
        type=Path,
        help="a PEM private or public key file; or a secure private key file (mode 0600), "
        "or a secure public key: one line, KEY or KEY name",
    )
    kind = fingerprint.add_mutually_exclusive_group()
    kind.add_argument(
        "--public",
        action="store_true",
        help="the file holds a secure public key, not a private key (both are 44 characters "
        "of base64)",
    )
    kind.add_argument(
        "--federation",
        action="store_true",
        help="the file holds a cluster key (mode 0600): print its fingerprint, the same for "
        "every copy",
    )
    fingerprint.set_defaults(command=run_fingerprint)


async def run_keygen(args: argparse.Namespace, env: Environment) -> ExitStatus:
    path: Path = args.path
    if args.federation:
        key = await trio.to_thread.run_sync(write_cluster_key, path, args.parents)
        env.say(
            f"mcrelay: wrote a new cluster key to {path}; every relay of the cluster needs a "
            "copy (mode 0600): compare copies by the fingerprint printed"
        )
        print(cluster_key_fingerprint(key), file=env.stdout, flush=True)
        return ExitStatus.OK
    if args.secure:
        pair = await trio.to_thread.run_sync(_generate_secure, path, args.parents)
        env.say(f"mcrelay: wrote a new secure key to {path}")
        print(encode_key(pair.public), file=env.stdout, flush=True)
        return ExitStatus.OK
    rsa_key = await trio.to_thread.run_sync(_generate, path, args.parents)
    env.say(f"mcrelay: wrote a new relay key to {path}")
    print(crypto.fingerprint(rsa_key.public_key()), file=env.stdout, flush=True)
    return ExitStatus.OK


def _check_directory(path: Path, parents: bool) -> None:
    if not parents and not os.path.lexists(path.parent):
        raise UsageError(f"directory {path.parent} does not exist; create it, or give --parents")


def _generate(path: Path, parents: bool) -> rsa.RSAPrivateKey:
    _check_directory(path, parents)
    return generate_key_file(path)


def _generate_secure(path: Path, parents: bool) -> KeyPair:
    _check_directory(path, parents)
    return generate_secure_key_file(path)


async def run_fingerprint(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if args.federation:
        cluster_key = read_cluster_key(args.path)
        print(cluster_key_fingerprint(cluster_key), file=env.stdout, flush=True)
        return ExitStatus.OK
    key = read_public_key(args.path, public=args.public)
    if isinstance(key, bytes):
        print(encode_key(key), file=env.stdout)
        print(client_id(key), file=env.stdout, flush=True)
    else:
        print(crypto.fingerprint(key), file=env.stdout, flush=True)
    return ExitStatus.OK


def read_public_key(path: Path, *, public: bool = False) -> rsa.RSAPublicKey | bytes:
    """The public key of a PEM private or public key file (RSA), or of a secure private
    key file or public key text (Curve25519: its 32 bytes).

    Only reads: the mode of an RSA private key is the daemon's concern, not checked here;
    a bare secure key is taken for a private key only when it is private to its owner.
    """
    try:
        contents = read_regular_file(path, what="key file", limit=MAX_KEY_FILE_BYTES)
    except FileError as exc:
        raise KeyFileError(str(exc)) from None
    if contents is None:
        raise KeyFileError(f"cannot read key file {path}: {os.strerror(errno.ENOENT)}")
    data = contents.data
    try:
        if b"PRIVATE KEY-----" in data:
            return crypto.load_private_key_pem(data).public_key()
        if b"PUBLIC KEY-----" in data:
            return crypto.load_public_key_untrusted(data)
    except ProtocolError as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None
    return _secure_public_key(path, contents, public)


def _secure_public_key(path: Path, contents: FileContents, public: bool) -> bytes:
    text = contents.data.decode("ascii", errors="replace").strip()
    words = text.split()
    if "\n" in text or not words or not _looks_like_a_key(words[0]):
        raise KeyFileError(
            f"{path} holds no PEM private key or public key, nor a secure key (one line: "
            f"{KEY_TEXT_CHARS} characters of base64)"
        )
    try:
        if len(words) > 1:  # "KEY name": an authorized-keys line, a public key
            return decode_key(words[0])
        if public:
            if not contents.mode & 0o044:
                # Only its owner may read it, as a private key's file: a private key's
                # base64 must never be shown as a public key (the two look alike).
                raise KeyFileError(
                    f"{path} is readable by its owner alone, as a private key file is: it is "
                    "not shown as a public key (drop --public to show the public key of the "
                    "private key it holds)"
                )
            return decode_key(words[0])
        if contents.mode & 0o077:
            raise KeyFileError(
                f"key file {path} has mode {contents.mode:04o}: a secure private key must not "
                f"be accessible to group or others (chmod 600 {path})"
            )
        return parse_private_key_text(contents.data).public
    except KeyTextError as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None


def _looks_like_a_key(word: str) -> bool:
    return len(word) == KEY_TEXT_CHARS and set(word) <= BASE64_CHARACTERS
