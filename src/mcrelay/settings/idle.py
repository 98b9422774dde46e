"""Settings that change nothing as given, or work against each other: said, not refused.

Each was taken in silence (found by review): ``--bridge-legacy`` without authorized keys,
``--api-tcp-without-token`` for an API that is not on TCP or has a token, federation
files without a federation, a ``client_timeout`` under the secure clients' keep-alive.
``config check`` prints them as warnings, and the daemon logs them at start.
"""

from mcrelay.protocol.secure.session import KEEPALIVE_AFTER_S
from mcrelay.settings.address import parse_api_address
from mcrelay.settings.config import RelayConfig
from mcrelay.settings.profiles import SECURE

SECURE_TIMEOUT_FLOOR_S = KEEPALIVE_AFTER_S * 1.5
"""Below this, an idle secure member may be timed out between its keep-alives (10 s of
silence, then one: a lost one or a slow path leaves little room)."""
FEDERATION_FILES = (
    "federation_key_file",
    "federation_credentials",
    "federation_nkey_file",
    "federation_tls_ca",
)


def idle_settings(config: RelayConfig) -> list[str]:
    """A sentence for each setting that changes nothing, or works against another."""
    said = []
    if config.bridge_legacy and config.authorized_keys is None:
        said.append(
            "bridge_legacy changes nothing without authorized_keys: without them the legacy "
            "profile is served anyway (unless profiles leaves it out)"
        )
    api = parse_api_address(config.api)
    if config.api_tcp_without_token and (api is None or api.path is not None or config.api_token):
        where = "off" if api is None else "on a unix socket" if api.path else "given a token"
        said.append(f"api_tcp_without_token changes nothing: the API is {where}")
    if config.federation is None:
        said.extend(
            f"{name} is set, but not federation: it is not read"
            for name in FEDERATION_FILES
            if getattr(config, name) is not None
        )
    if SECURE in config.served_profiles and config.client_timeout_s < SECURE_TIMEOUT_FLOOR_S:
        said.append(
            f"client_timeout {config.client_timeout_s:g} s is under "
            f"{SECURE_TIMEOUT_FLOOR_S:g} s: secure clients send a keep-alive after "
            f"{KEEPALIVE_AFTER_S:g} s of silence, so idle secure members may time out"
        )
    return said
