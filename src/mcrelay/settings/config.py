"""The relay's settings: each declared once, as a RelayConfig field.

Adding a setting is one declaration here, plus its use::

    max_widgets: int = setting(
        16, convert=positive_int, check=at_least(1), section="limits", live=True,
        help="widgets at most",
    )

That field is then a flag (``--max-widgets``), a variable (``MCRELAY_MAX_WIDGETS``),
a key of the TOML file (``[limits] max_widgets``), a line of ``mcrelay config check``
and of the API's status, and a reload applies it (``live=True``) or names it as
needing a restart. ``check`` is the rule on the value, which RelayConfig applies
however the value was given; a rule between fields goes in ``__post_init__``. Where
the relay uses it: for a live setting, ``Relay.reconfigure`` hands it to the component
that needs it (its ``configure``). Then regenerate the example file with
``python -m mcrelay.settings.example > packaging/mcrelay.toml``; a test checks that
the file matches.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from mcrelay.logs import LOG_FORMATS
from mcrelay.protocol.legacy import MAX_MESSAGE_BYTES
from mcrelay.protocol.secure.keys import AuthorizedKey
from mcrelay.protocol.secure.messages import MAX_CHAT_BYTES
from mcrelay.settings.address import (
    SOCKET_NAME,
    ApiAddress,
    default_api,
    parse_api_address,
    state_home,
)
from mcrelay.settings.convert import (
    above_zero,
    accepted_by,
    api_address,
    at_least,
    boolean,
    file_path,
    ipv4_address,
    multicast_group,
    one_of,
    port,
    positive_float,
    positive_int,
    within,
)
from mcrelay.settings.declare import CHECK, internal, setting
from mcrelay.settings.federation import (
    DEFAULT_CLUSTER,
    check_name,
    check_nats_urls,
    name,
    nats_urls,
)
from mcrelay.settings.profiles import (
    COOKIE_MODES,
    LEGACY,
    PROFILES,
    SECURE_KEY_FILE_NAME,
    check_profile_list,
    contradiction,
    profile_list,
    served_profiles,
)

KEY_FILE_NAME = "relay-key.pem"
MAX_RECEIVE_BUFFER_BYTES = 2**30 - 1
"""Linux doubles what it is asked for and holds it in an int: it gives at most this."""
MAX_CRYPTO_WORKERS = 256
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigValueError(ValueError):
    """A setting's value is out of its range; ``field`` names the setting, ``others``
    the settings it is wrong beside, if any (each error names them all, with where each
    came from: found by review, when the one named was a default and the file had set
    the other)."""

    def __init__(self, field: str, message: str, others: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.others = others


def _spoken(field_name: str) -> str:
    """``client_timeout_s`` as an error says it: ``client timeout`` (its unit follows in
    the message; "client timeout s must be..." came out before, found by review)."""
    name = field_name if field_name.endswith("_per_s") else field_name.removesuffix("_s")
    return name.replace("_", " ")


def state_directory(environ: Mapping[str, str] | None = None) -> Path:
    """``$STATE_DIRECTORY`` (systemd), else ``$XDG_STATE_HOME/mcrelay``, else
    ``~/.local/state/mcrelay``: where the relay keeps its keys, and a client its own."""
    env = os.environ if environ is None else environ
    state_directories = [d for d in env.get("STATE_DIRECTORY", "").split(":") if d]
    if state_directories:
        # systemd may pass several directories separated by colons; the first is ours.
        return Path(state_directories[0])
    return state_home(env) / "mcrelay"


def default_key_file(environ: Mapping[str, str] | None = None) -> Path:
    return state_directory(environ) / KEY_FILE_NAME


def secure_key_beside(key_file: Path) -> Path:
    """The secure key file's default: ``relay-secure.key`` in the RSA key file's directory."""
    return key_file.parent / SECURE_KEY_FILE_NAME


def default_crypto_workers() -> int:
    return min(len(os.sched_getaffinity(0)) or 1, MAX_CRYPTO_WORKERS)


_AT_LEAST_1 = at_least(1)
_ABOVE_0 = above_zero()


@dataclass(frozen=True, slots=True)
class RelayConfig:
    group: str = setting(
        "224.1.1.1",
        convert=multicast_group,
        check=accepted_by(multicast_group),
        section="network",
        live=False,
        help="multicast group",
    )
    port: int = setting(
        5007,
        convert=port,
        check=within(0, 0xFFFF),
        section="network",
        live=False,
        help="UDP port",
    )
    interface: str = setting(
        "0.0.0.0",
        convert=ipv4_address,
        check=accepted_by(ipv4_address),
        section="network",
        live=False,
        help="address of the interface that joins the group",
    )
    key_file: Path = setting(
        default_factory=default_key_file,
        convert=file_path,
        section="relay",
        live=False,
        help="relay private key, created 0600 if missing",
        default_text=f"$STATE_DIRECTORY/{KEY_FILE_NAME}, else $XDG_STATE_HOME/mcrelay/, "
        "else ~/.local/state/mcrelay/",
        example=Path("/var/lib/mcrelay") / KEY_FILE_NAME,
        command_default=default_key_file,
    )
    profiles: str | None = setting(
        None,
        convert=profile_list,
        check=check_profile_list,
        section="relay",
        live=False,
        help="wire profiles served: legacy, secure, or both (legacy,secure)",
        default_text="legacy,secure; only secure with authorized_keys, unless bridge_legacy",
        example=",".join(PROFILES),
    )
    secure_key_file: Path | None = setting(
        None,
        convert=file_path,
        section="secure",
        live=False,
        help="relay private key of the secure profile (Curve25519, base64 text), created "
        "0600 if missing",
        default_text=f"{SECURE_KEY_FILE_NAME} in key_file's directory",
        example=Path("/var/lib/mcrelay") / SECURE_KEY_FILE_NAME,
    )
    authorized_keys: Path | None = setting(
        None,
        convert=file_path,
        section="secure",
        live=True,
        help="file of 'KEY name' lines: only those keys may join by the secure profile "
        "(re-read on reload); with it the legacy profile is off unless bridge_legacy",
        example=Path("/etc/mcrelay/authorized-keys"),
    )
    authorized_key_list: tuple[AuthorizedKey, ...] | None = internal(
        None, why="read from authorized_keys, at start and on each reload"
    )
    bridge_legacy: bool = setting(
        False,
        convert=boolean,
        section="secure",
        live=False,
        help="with authorized_keys, serve the legacy profile too: a legacy member reads and "
        "can send everything, so the relay then has legacy-level confidentiality",
    )
    cookies: str = setting(
        "auto",
        convert=one_of(COOKIE_MODES),
        check=accepted_by(one_of(COOKIE_MODES)),
        section="secure",
        live=True,
        help="auto: a secure handshake needs a cookie while the relay is under load; "
        "always: at all times",
    )
    client_timeout_s: float = setting(
        30.0,
        name="client_timeout",
        convert=positive_float,
        # Its quarter is how often the relay looks for silent clients.
        check=within(0.1, 86400, " seconds"),
        section="relay",
        live=True,
        help="seconds of silence before a client (of either profile) is removed",
    )
    reassembly_timeout_s: float = setting(
        5.0,
        name="reassembly_timeout",
        convert=positive_float,
        check=within(0.01, 3600, " seconds"),
        section="relay",
        live=True,
        help="seconds a message may take to arrive whole",
    )
    max_message_bytes: int = setting(
        MAX_MESSAGE_BYTES,
        convert=positive_int,
        check=within(1, MAX_MESSAGE_BYTES, " (the legacy profile's largest)"),
        section="relay",
        live=True,
        help=(
            f"largest plaintext of a legacy member's message or a post (at most "
            f"{MAX_MESSAGE_BYTES}; secure members may send {MAX_CHAT_BYTES})"
        ),
    )
    crypto_workers: int = setting(
        default_factory=default_crypto_workers,
        convert=positive_int,
        check=within(1, MAX_CRYPTO_WORKERS),
        section="relay",
        live=True,
        help="processes doing RSA",
        default_text="one per CPU",
        example=2,
    )
    max_clients: int = setting(
        4096,
        convert=positive_int,
        check=_AT_LEAST_1,
        section="limits",
        live=True,
        help="registered clients of each profile at most",
    )
    max_clients_per_host: int = setting(
        256,
        convert=positive_int,
        check=_AT_LEAST_1,
        section="limits",
        live=True,
        help="registered clients of each profile from one IP address at most",
    )
    max_messages_per_source: int = setting(
        8,
        convert=positive_int,
        check=_AT_LEAST_1,
        section="limits",
        live=True,
        help="messages in reassembly per client",
    )
    max_reassembly_bytes: int = setting(
        4 * 1024 * 1024,
        convert=positive_int,
        check=at_least(65536),
        section="limits",
        live=True,
        help="bytes in reassembly in total",
    )
    max_pending_relays: int = setting(
        256,
        convert=positive_int,
        check=_AT_LEAST_1,
        section="limits",
        live=True,
        help="messages admitted and not yet sent (in crypto, or behind their sender's "
        "earlier one), operator posts included; one host's members hold half at most",
    )
    max_send_queue_bytes: int = setting(
        64 * 1024 * 1024,
        convert=positive_int,
        check=at_least(131072),
        section="limits",
        live=True,
        help="bytes of legacy copies waiting while the socket's send buffer is full, "
        "and apart as many of secure messages queued or unacknowledged; past it a "
        "legacy copy is dropped (send_queue_full), or the secure member holding the "
        "most is removed (left, unreachable); past three quarters of it no secure "
        "newcomer is let in (overloaded), and a secure member over its share that "
        "leaves a message unacknowledged 5 s, or keeps its window waiting while its "
        "queue does not shrink for 5 s, is removed (stalled)",
    )
    send_queue_datagrams: int = internal(
        16384,
        why="the send queue's bound, which tests and library users set; not offered to operators",
        check=_AT_LEAST_1,
    )
    receive_buffer_bytes: int = setting(
        4 * 1024 * 1024,
        convert=positive_int,
        check=within(65536, MAX_RECEIVE_BUFFER_BYTES, " bytes"),
        section="limits",
        live=False,
        help="socket receive buffer asked for",
    )
    key_answers_per_source_burst: int = setting(
        5,
        convert=positive_int,
        check=_AT_LEAST_1,
        section="limits",
        live=True,
        help="key-request answers a source may get at once",
    )
    key_answers_per_source_per_s: float = setting(
        1.0,
        convert=positive_float,
        check=_ABOVE_0,
        section="limits",
        live=True,
        help="key-request answers a source earns per second",
    )
    key_answers_total_burst: int = setting(
        200,
        convert=positive_int,
        check=_AT_LEAST_1,
        section="limits",
        live=True,
        help="key-request answers at once, all sources together",
    )
    key_answers_total_per_s: float = setting(
        100.0,
        convert=positive_float,
        check=_ABOVE_0,
        section="limits",
        live=True,
        help="key-request answers per second, all sources together",
    )
    registrations_per_host_burst: int = setting(
        64,
        convert=positive_int,
        check=_AT_LEAST_1,
        section="limits",
        live=True,
        help="registrations and re-keys one host may make at once",
    )
    registrations_per_host_per_s: float = setting(
        20.0,
        convert=positive_float,
        check=_ABOVE_0,
        section="limits",
        live=True,
        help="registrations and re-keys one host earns per second",
    )
    registrations_total_burst: int = setting(
        200,
        convert=positive_int,
        check=_AT_LEAST_1,
        section="limits",
        live=True,
        help="registrations and re-keys at once, all hosts together",
    )
    registrations_total_per_s: float = setting(
        100.0,
        convert=positive_float,
        check=_ABOVE_0,
        section="limits",
        live=True,
        help="registrations and re-keys per second, all hosts together",
    )
    api: str = setting(
        "off",
        convert=api_address,
        check=accepted_by(api_address),
        section="api",
        live=False,
        help="control API: host:port, unix:/path or off",
        # A library user opts in to the API; the command serves it on a Unix socket only
        # its own user (or, under systemd, root and the unit's group) may use.
        command_default=default_api,
        default_text=f"unix:$RUNTIME_DIRECTORY/{SOCKET_NAME}, else unix:/run/mcrelay/"
        f"{SOCKET_NAME} for root, else unix:$XDG_RUNTIME_DIR/mcrelay/{SOCKET_NAME}, "
        f"else unix:$XDG_STATE_HOME/mcrelay/{SOCKET_NAME} (~/.local/state when unset)",
        example=f"unix:/run/mcrelay/{SOCKET_NAME}",
    )
    api_tcp_without_token: bool = setting(
        False,
        convert=boolean,
        section="api",
        live=False,
        help="serve a loopback TCP API with no token: every local user may then administer "
        "the relay",
    )
    api_token: str | None = internal(
        None, why="read from api_token_file, at start and on each reload; never shown"
    )
    api_token_file: Path | None = setting(
        None,
        convert=file_path,
        section="api",
        live=True,
        help="file holding the API's bearer token (mode 0600); required for a host:port API",
        example=Path("/etc/mcrelay/api-token"),
    )
    api_max_connections: int = setting(
        128,
        convert=positive_int,
        check=at_least(2),
        section="api",
        live=True,
        help="open API connections at most; more are refused with a 503",
    )
    api_max_event_subscribers: int = setting(
        64,
        convert=positive_int,
        section="api",
        live=True,
        help="open event streams (/v1/events) at most, below api_max_connections; more get a 503",
    )
    """Checked against api_max_connections, in ``__post_init__``."""
    federation: str | None = setting(
        None,
        convert=nats_urls,
        check=check_nats_urls,
        section="federation",
        live=False,
        help="join a federation: its NATS servers, nats://HOST:PORT[,...] (tls:// for TLS); "
        "off when not set",
        example="nats://127.0.0.1:4222",
    )
    federation_cluster: str = setting(
        DEFAULT_CLUSTER,
        convert=name,
        check=check_name,
        section="federation",
        live=False,
        help="the cluster's name: relays of one cluster are one group (subjects mcrelay.NAME.*)",
    )
    relay_name: str | None = setting(
        None,
        convert=name,
        check=check_name,
        section="federation",
        live=False,
        help="this relay's name in the cluster, unique there",
        default_text="the host name and the relay's port, as host-port",
        example="lab-4446",
    )
    federation_key_file: Path | None = setting(
        None,
        convert=file_path,
        section="federation",
        live=False,
        help="the cluster key (mode 0600; mcrelay keygen --federation) sealing every "
        "envelope; required with federation; every relay of the cluster has a copy",
        example=Path("/etc/mcrelay/federation.key"),
    )
    federation_credentials: Path | None = setting(
        None,
        convert=file_path,
        section="federation",
        live=False,
        help="NATS credentials file (.creds: user JWT and nkey seed)",
        example=Path("/etc/mcrelay/nats.creds"),
    )
    federation_nkey_file: Path | None = setting(
        None,
        convert=file_path,
        section="federation",
        live=False,
        help="NATS nkey seed file (instead of a credentials file)",
        example=Path("/etc/mcrelay/nats.nk"),
    )
    federation_tls_ca: Path | None = setting(
        None,
        convert=file_path,
        section="federation",
        live=False,
        help="CA certificate (PEM) the NATS servers' TLS certificates are checked against",
        example=Path("/etc/mcrelay/nats-ca.pem"),
    )
    log_level: str = setting(
        "info",
        convert=one_of(LOG_LEVELS),
        check=accepted_by(one_of(LOG_LEVELS)),
        section="log",
        live=True,
        help="debug, info, warning or error",
    )
    log_format: str = setting(
        "auto",
        convert=one_of(LOG_FORMATS),
        check=accepted_by(one_of(LOG_FORMATS)),
        section="log",
        live=False,
        help="auto (journal under systemd, else human), human, journal or json",
    )

    def __post_init__(self) -> None:
        for each in fields(self):
            check = each.metadata[CHECK]
            if check is None:
                continue
            try:
                check(getattr(self, each.name))
            except ValueError as exc:
                raise ConfigValueError(each.name, f"{_spoken(each.name)} {exc}") from None
        self._check_across_fields()

    def _check_across_fields(self) -> None:
        self._check_profiles()
        self._check_federation()
        if not 1 <= self.api_max_event_subscribers < self.api_max_connections:
            raise ConfigValueError(
                "api_max_event_subscribers",
                "api max event subscribers must be at least 1 and below api_max_connections "
                "(each stream holds a connection; the others are for requests)",
                ("api_max_connections",),
            )
        api = parse_api_address(self.api)
        if api is None or api.path is not None or self.api_token:
            return
        if not api.is_loopback:
            raise ConfigValueError(
                "api",
                f"refusing to serve the control API on {api} without a token: "
                "give --api-token-file, or use a unix:/path socket",
            )
        if not self.api_tcp_without_token:
            raise ConfigValueError(
                "api",
                f"refusing to serve the control API on {api} without a token: every local "
                "user could administer the relay. Give --api-token-file, use a unix:/path "
                "socket (the default), or say --api-tcp-without-token if that is intended",
            )

    def _check_profiles(self) -> None:
        if (self.authorized_keys is None) != (self.authorized_key_list is None):
            raise ConfigValueError(
                "authorized_keys",
                "authorized_keys and the keys read from it go together "
                "(settings.resolve reads them; so does settings.authorized.read_authorized_keys)",
            )
        # As the file system sees them: '/x/../x/k' or a relative path is the same file
        # (config check passed them, the daemon then made one key and failed to read it
        # as the other: found by review).
        if os.path.realpath(self.secure_key_path) == os.path.realpath(self.key_file):
            raise ConfigValueError(
                "secure_key_file",
                f"secure_key_file and key_file are both {self.key_file}: each key needs its "
                f"own file (secure_key_file is {SECURE_KEY_FILE_NAME} beside key_file unless "
                "given)",
                ("key_file",),
            )
        wrong = contradiction(
            self.profiles,
            restricted=self.authorized_keys is not None,
            bridge_legacy=self.bridge_legacy,
        )
        if wrong is not None:
            raise ConfigValueError(*wrong)

    def _check_federation(self) -> None:
        if self.federation is None:
            return
        if self.federation_key_file is None:
            raise ConfigValueError(
                "federation_key_file",
                "federation needs federation_key_file: the cluster key every envelope is "
                "sealed with (mcrelay keygen --federation PATH; every relay gets a copy)",
            )
        # The cluster key is copied to every relay: the relay's own key given here would
        # hand its private key to them all (found by review).
        cluster = os.path.realpath(self.federation_key_file)
        for field, path in (("secure_key_file", self.secure_key_path), ("key_file", self.key_file)):
            if os.path.realpath(path) == cluster:
                raise ConfigValueError(
                    "federation_key_file",
                    f"federation_key_file and {field} are both {path}: each key needs its own "
                    "file (every relay gets a copy of the cluster key; keep the relay's keys its "
                    "own: mcrelay keygen --federation PATH)",
                    (field,),
                )
        if self.federation_credentials is not None and self.federation_nkey_file is not None:
            raise ConfigValueError(
                "federation_nkey_file",
                "give federation_credentials or federation_nkey_file, not both",
            )

    @property
    def federation_servers(self) -> tuple[str, ...]:
        """The NATS servers' URLs; none when the relay does not federate."""
        return () if self.federation is None else tuple(self.federation.split(","))

    @property
    def api_address(self) -> ApiAddress | None:
        return parse_api_address(self.api)

    @property
    def served_profiles(self) -> tuple[str, ...]:
        """The wire profiles the relay serves (``legacy``, ``secure``), decided here only."""
        return served_profiles(
            self.profiles,
            restricted=self.authorized_keys is not None,
            bridge_legacy=self.bridge_legacy,
        )

    @property
    def legacy_bridged(self) -> bool:
        """Membership is restricted by key, and legacy members are let in beside it: the
        relay has legacy-level confidentiality, which the daemon says at start."""
        return self.authorized_keys is not None and LEGACY in self.served_profiles

    @property
    def secure_key_path(self) -> Path:
        """The secure key's file: ``secure_key_file``, else :func:`secure_key_beside`."""
        if self.secure_key_file is not None:
            return self.secure_key_file
        return secure_key_beside(self.key_file)

    def authorized_names(self) -> dict[bytes, str] | None:
        """Each authorized key's name, by its raw 32 bytes; None when membership is open."""
        if self.authorized_key_list is None:
            return None
        return {entry.key: entry.name for entry in self.authorized_key_list}
