"""``mcrelay daemon``: run the relay until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path

from mcrelay.api.address import DEFAULT_API, parse_api_address
from mcrelay.cli.environment import Environment
from mcrelay.cli.options import (
    Parser,
    UsageError,
    add_flag,
    ipv4_address,
    multicast_group,
    port,
    positive_float,
    positive_int,
)
from mcrelay.cli.status import ExitStatus
from mcrelay.daemon import config as defaults
from mcrelay.daemon.config import RelayConfig
from mcrelay.protocol.legacy import MAX_MESSAGE_BYTES

LOG_LEVELS = ("debug", "info", "warning", "error")


def log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def add_network_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    add_flag(parser, environ, "--group", multicast_group, defaults.DEFAULT_GROUP, "multicast group")
    add_flag(parser, environ, "--port", port, defaults.DEFAULT_PORT, "UDP port")
    add_flag(
        parser,
        environ,
        "--interface",
        ipv4_address,
        defaults.DEFAULT_INTERFACE,
        "address of the interface for multicast",
    )


def add_parser(subparsers: argparse._SubParsersAction[Parser], environ: Mapping[str, str]) -> None:
    parser = subparsers.add_parser("daemon", help="run the relay")
    add_network_flags(parser, environ)
    add_flag(
        parser, environ, "--key-file", Path, None, "relay private key, created 0600 if missing"
    )
    add_flag(
        parser,
        environ,
        "--client-timeout",
        positive_float,
        defaults.CLIENT_TIMEOUT_S,
        "seconds of silence before a client is removed",
    )
    add_flag(
        parser,
        environ,
        "--reassembly-timeout",
        positive_float,
        defaults.REASSEMBLY_TIMEOUT_S,
        "seconds a message may take to arrive whole",
    )
    add_flag(
        parser,
        environ,
        "--max-message-bytes",
        positive_int,
        MAX_MESSAGE_BYTES,
        "largest plaintext relayed",
    )
    add_flag(
        parser,
        environ,
        "--crypto-workers",
        positive_int,
        defaults.default_crypto_workers(),
        "threads for RSA",
    )
    add_flag(
        parser,
        environ,
        "--max-clients",
        positive_int,
        defaults.MAX_CLIENTS,
        "registered clients at most",
    )
    add_flag(
        parser,
        environ,
        "--max-messages-per-source",
        positive_int,
        defaults.MAX_MESSAGES_PER_SOURCE,
        "messages in reassembly per source",
    )
    add_flag(
        parser,
        environ,
        "--max-reassembly-bytes",
        positive_int,
        defaults.MAX_REASSEMBLY_BYTES,
        "bytes in reassembly in total",
    )
    add_flag(
        parser,
        environ,
        "--receive-buffer-bytes",
        positive_int,
        defaults.RECEIVE_BUFFER_BYTES,
        "socket receive buffer asked for",
    )
    add_flag(
        parser,
        environ,
        "--api",
        api_address,
        DEFAULT_API,
        "control API: host:port, unix:/path or off",
    )
    add_flag(parser, environ, "--api-token-file", Path, None, "file holding the API's bearer token")
    add_flag(parser, environ, "--log-level", log_level, "info", "log level")
    parser.set_defaults(command=run)


def api_address(text: str) -> str:
    try:
        parse_api_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the API token file {path}: {exc}") from None
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"the API token file {path} must hold one token, with no spaces")
    return token


def build_config(args: argparse.Namespace, environ: Mapping[str, str]) -> RelayConfig:
    token = read_token(args.api_token_file) if args.api_token_file else None
    try:
        return RelayConfig(
            group=args.group,
            port=args.port,
            interface=args.interface,
            key_file=args.key_file or defaults.default_key_file(dict(environ)),
            client_timeout_s=args.client_timeout,
            reassembly_timeout_s=args.reassembly_timeout,
            max_message_bytes=args.max_message_bytes,
            crypto_workers=args.crypto_workers,
            max_clients=args.max_clients,
            max_messages_per_source=args.max_messages_per_source,
            max_reassembly_bytes=args.max_reassembly_bytes,
            receive_buffer_bytes=args.receive_buffer_bytes,
            api=args.api,
            api_token=token,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    config = build_config(args, env.environ)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=env.stderr,
        force=True,
    )
    from mcrelay.daemon.service import run_until_signal

    await run_until_signal(config)
    return ExitStatus.OK
