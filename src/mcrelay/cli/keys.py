"""``mcrelay keygen`` and ``mcrelay fingerprint``: the relay's key, made and identified offline."""

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
from mcrelay.files import FileError, read_regular_file
from mcrelay.protocol.errors import ProtocolError
from mcrelay.protocol.legacy import crypto


def add_parsers(subparsers: argparse._SubParsersAction[Parser], environ: Mapping[str, str]) -> None:
    keygen = subparsers.add_parser(
        "keygen", help="create a relay key file (mode 0600) and print its fingerprint"
    )
    keygen.add_argument("path", type=Path, help="where to write it; an existing file is kept")
    keygen.add_argument(
        "--parents", action="store_true", help="create missing directories (mode 0700)"
    )
    keygen.set_defaults(command=run_keygen)
    fingerprint = subparsers.add_parser(
        "fingerprint", help="print the fingerprint of a private or public key (PEM)"
    )
    fingerprint.add_argument("path", type=Path, help="a PEM private key or public key file")
    fingerprint.set_defaults(command=run_fingerprint)


async def run_keygen(args: argparse.Namespace, env: Environment) -> ExitStatus:
    path: Path = args.path
    key = await trio.to_thread.run_sync(_generate, path, args.parents)
    env.say(f"mcrelay: wrote a new relay key to {path}")
    print(crypto.fingerprint(key.public_key()), file=env.stdout, flush=True)
    return ExitStatus.OK


def _generate(path: Path, parents: bool) -> rsa.RSAPrivateKey:
    if not parents and not os.path.lexists(path.parent):
        raise UsageError(f"directory {path.parent} does not exist; create it, or give --parents")
    return generate_key_file(path)


async def run_fingerprint(args: argparse.Namespace, env: Environment) -> ExitStatus:
    key = read_public_key(args.path)
    print(crypto.fingerprint(key), file=env.stdout, flush=True)
    return ExitStatus.OK


def read_public_key(path: Path) -> rsa.RSAPublicKey:
    """The public key of a PEM private key file, or of a PEM public key file.

    Only reads: the private key file's mode is the daemon's concern, not checked here.
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
    raise KeyFileError(f"{path} holds no PEM private key or public key")
