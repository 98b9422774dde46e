"""Converters (text to value) and checks (value in range) for the settings.

A converter reads one flag, ``MCRELAY_<NAME>`` value or file value as text and
raises ``ValueError`` quoting it when it is not of the right form. A check takes a
value of the right form, however it was given (and from ``RelayConfig(...)`` too),
and raises ``ValueError`` saying the rule it breaks ("must be at least 1").
"""

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcrelay.settings.address import parse_api_address
from mcrelay.settings.quoted import quoted

Check = Callable[[Any], None]

# Plain ASCII decimal only: int() and float() also take '1_000', spaces, fullwidth
# digits, 'inf' and 'nan', and their errors ("invalid literal for int()") say nothing useful.
_INTEGER = re.compile(r"[0-9]{1,30}")
_DECIMAL = re.compile(r"(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,3})?")
"""A TOML float reaches the converter as Python writes it, so an exponent is allowed."""


def file_path(text: str) -> Path:
    if not text or "\0" in text:
        what = "a NUL character" if text else "nothing"
        raise ValueError(f"{quoted(text)} is not a file path: it holds {what}")
    return Path(text)


def port(text: str) -> int:
    if not _INTEGER.fullmatch(text) or int(text) > 0xFFFF:
        raise ValueError(f"{quoted(text)} is not a port number (an integer from 0 to 65535)")
    return int(text)


def multicast_ttl(text: str) -> int:
    if not _INTEGER.fullmatch(text) or not 1 <= int(text) <= 255:
        raise ValueError(f"{quoted(text)} is not a multicast TTL (an integer from 1 to 255)")
    return int(text)


def positive_float(text: str) -> float:
    if not _DECIMAL.fullmatch(text) or not 0 < float(text) < float("inf"):
        raise ValueError(f"{quoted(text)} is not a positive number (such as 30 or 0.5)")
    return float(text)


def positive_int(text: str) -> int:
    if not _INTEGER.fullmatch(text) or int(text) < 1:
        raise ValueError(f"{quoted(text)} is not a positive integer (such as 8)")
    return int(text)


def ipv4_address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{quoted(text)} is not an IPv4 address") from None


def unicast_host(text: str) -> str:
    """An IPv4 address a datagram can be sent to one host at: not the unspecified
    address, the broadcast address or a multicast group (``--relay 255.255.255.255``
    failed later with a bare 'Permission denied': found by review)."""
    address = ipaddress.IPv4Address(ipv4_address(text))
    if address.is_unspecified or address == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{quoted(text)} is no one host's address")
    if address.is_multicast:
        raise ValueError(f"{quoted(text)} is a multicast group, not a host (the group is --group)")
    return str(address)


def multicast_group(text: str) -> str:
    address = ipv4_address(text)
    if not ipaddress.IPv4Address(address).is_multicast:
        raise ValueError(f"{quoted(text)} is not a multicast address (224.0.0.0/4)")
    return address


def api_address(text: str) -> str:
    parse_api_address(text)
    return text


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def boolean(text: str) -> bool:
    if text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    raise ValueError(f"{quoted(text)} is not true or false (nor yes, no, on, off, 1, 0)")


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(f"{quoted(text)} is not one of {', '.join(choices)}")
        return text.lower()

    return convert


def at_least(low: int) -> Check:
    def check(value: int) -> None:
        if not value >= low:
            raise ValueError(f"must be at least {low}")

    return check


def above_zero(unit: str = "") -> Check:
    def check(value: float) -> None:
        if not value > 0:
            raise ValueError(f"must be above 0{unit}")

    return check


def within(low: float, high: float, note: str = "") -> Check:
    def check(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be {low} to {high}{note}")

    return check


def accepted_by(convert: Callable[[str], Any]) -> Check:
    """For a setting whose converter is its whole rule (an address, a name from a list)."""

    def check(value: str) -> None:
        convert(value)

    return check
