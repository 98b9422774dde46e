"""Argument types and flags that also read ``MCRELAY_<NAME>`` from the environment."""

import argparse
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from mcrelay.protocol.addresses import format_address, parse_address
from mcrelay.protocol.federation.envelope import valid_relay_name
from mcrelay.protocol.secure.keys import CLIENT_ID_PREFIX, parse_client_id
from mcrelay.settings import convert


class UsageError(Exception):
    """Bad command line or environment; the message names what and why."""


class Parser(argparse.ArgumentParser):
    """Errors are raised, to be printed as one line, and name the (sub)command they are
    about: an unknown argument is reported by the command that was given it. A flag is
    never known by a prefix of its name (``--api-token s3cr3t`` was once taken for
    ``--api-token-file``, and the error quoted the secret)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("mcrelay").strip()
        where = f"{command}: " if command else ""
        raise UsageError(f"{where}{message} (see '{self.prog} --help')")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A subcommand's parser is run through this method, and would pass what it
        # does not know up to the top parser, which would then blame 'mcrelay'.
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            # Only the flags, without their values: a value may be a secret.
            flags = [extra.split("=", 1)[0] for extra in extras if extra.startswith("-")]
            self.error(f"unrecognized arguments: {' '.join(flags or extras)}")
        return parsed, extras


FLAG_ENVIRONMENT: set[str] = set()
"""The ``MCRELAY_*`` variables of the commands' flags (:func:`add_flag` adds each), so
that the daemon can tell a misspelt setting from another command's variable."""


def env_name(flag: str) -> str:
    return "MCRELAY_" + flag.lstrip("-").upper().replace("-", "_")


def add_flag(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str],
    flag: str,
    convert: Callable[[str], Any],
    default: Any,
    help: str,
    default_text: str | None = None,
) -> None:
    """Add ``flag`` whose default comes from ``MCRELAY_<NAME>`` when that is set.
    ``default_text`` says the default in words where it depends on the user."""
    name = env_name(flag)
    FLAG_ENVIRONMENT.add(name)
    if name in environ:
        try:
            default = default_text = convert(environ[name])
            from_environment = dict(parser.get_default(FROM_ENVIRONMENT) or {})
            from_environment[flag.lstrip("-").replace("-", "_")] = default
            parser.set_defaults(**{FROM_ENVIRONMENT: from_environment})
        except (ValueError, argparse.ArgumentTypeError) as exc:
            # Said only if this command uses it and no flag overrides it: every
            # command's parser is built, and a flag beats the environment.
            default = BadVariable(f"{name}: {exc}")
            default_text = f"{environ[name]!r} from {name}, which is not valid"
    default_text = default_text or default
    shown = "" if default_text is None else f" (default: {default_text})"
    parser.add_argument(flag, type=convert, default=default, help=f"{help}{shown}; env {name}")


FROM_ENVIRONMENT = "from_environment"
"""The namespace's record of the flags' values that came from ``MCRELAY_<NAME>``."""


def given_as_flag(args: argparse.Namespace, dest: str) -> bool:
    """Was ``dest`` given on the command line (a value of its ``MCRELAY_<NAME>`` alone
    is not)? A variable only says what a command that uses it takes, and stops no other
    (a profile's variable, exported, refused the other profile's commands as if its
    flag were given: found by review)."""
    value = getattr(args, dest)
    from_environment: dict[str, Any] = getattr(args, FROM_ENVIRONMENT, None) or {}
    return value is not None and (dest not in from_environment or value != from_environment[dest])


class BadVariable:
    """A flag's ``MCRELAY_<NAME>`` that does not convert: its default until a flag is
    given; :func:`check_variables` says it for the command that would use it."""

    def __init__(self, message: str) -> None:
        self.message = message


def check_variables(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` for a variable the parsed command would have used."""
    for value in vars(args).values():
        if isinstance(value, BadVariable):
            raise UsageError(value.message)


def argument_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A settings converter (raising ValueError) as an argparse type with its own message."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = convert.__name__
    return parse


port = argument_type(convert.port)
positive_float = argument_type(convert.positive_float)
ipv4_address = argument_type(convert.ipv4_address)
unicast_host = argument_type(convert.unicast_host)
multicast_group = argument_type(convert.multicast_group)
multicast_ttl = argument_type(convert.multicast_ttl)
api_address = argument_type(convert.api_address)


def fingerprint(text: str) -> str:
    if not text.startswith("SHA256:") or len(text) != len("SHA256:") + 43:
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA256:... fingerprint")
    return text


def relay_name(text: str) -> str:
    """A federated relay's name, as remote clients' ids carry it."""
    if not valid_relay_name(text):
        shown = text if len(text) <= 70 else text[:67] + "..."
        raise argparse.ArgumentTypeError(
            f"{shown!r} is not a relay name (1 to 64 letters, digits, '_' or '-')"
        )
    return text


def client_id(text: str) -> str:
    """A client's id as the API writes it: ``ip:port`` or ``[ipv6]:port`` (legacy), or
    ``k:`` and its key in base64url (secure); a client of another relay of the
    federation has that relay's name and ``/`` before it (``lab-5007/10.0.0.5:4000``)."""
    relay, slash, local = text.partition("/")
    if slash:
        return f"{relay_name(relay)}/{_local_client_id(local)}"
    return _local_client_id(text)


def _local_client_id(text: str) -> str:
    if text.startswith(CLIENT_ID_PREFIX):
        try:
            parse_client_id(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    try:
        return format_address(parse_address(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc}; a client is ip:port or k:KEY, and RELAY/ before it for another relay's"
        ) from None


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address, written the way the API writes it."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None
