"""Argument types and flags that also read ``MCRELAY_<NAME>`` from the environment."""

import argparse
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, NoReturn


class UsageError(Exception):
    """Bad command line or environment; the message names what and why."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def env_name(flag: str) -> str:
    return "MCRELAY_" + flag.lstrip("-").upper().replace("-", "_")


def add_flag(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str],
    flag: str,
    convert: Callable[[str], Any],
    default: Any,
    help: str,
) -> None:
    """Add ``flag`` whose default comes from ``MCRELAY_<NAME>`` when that is set."""
    name = env_name(flag)
    if name in environ:
        try:
            default = convert(environ[name])
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise UsageError(f"{name}={environ[name]!r}: {exc}") from None
    shown = "" if default is None else f" (default: {default})"
    parser.add_argument(flag, type=convert, default=default, help=f"{help}{shown}; env {name}")


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"port {value} is not 0 to 65535")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def ipv4_address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def multicast_group(text: str) -> str:
    address = ipv4_address(text)
    if not ipaddress.IPv4Address(address).is_multicast:
        raise argparse.ArgumentTypeError(f"{text!r} is not a multicast address (224.0.0.0/4)")
    return address


def fingerprint(text: str) -> str:
    if not text.startswith("SHA256:") or len(text) != len("SHA256:") + 43:
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA256:... fingerprint")
    return text
