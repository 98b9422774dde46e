"""Settings that change nothing as given are said (found by review: taken in silence)."""

from pathlib import Path
from typing import Any

import pytest

from mcrelay.settings.config import RelayConfig
from mcrelay.settings.idle import idle_settings
from support import Console


def config(tmp_path: Path, **overrides: Any) -> RelayConfig:
    return RelayConfig(key_file=tmp_path / "relay-key.pem", **overrides)


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"bridge_legacy": True}, "bridge_legacy changes nothing without authorized_keys"),
        (
            {"api_tcp_without_token": True, "api": "unix:/run/x.sock"},
            "api_tcp_without_token changes nothing: the API is on a unix socket",
        ),
        (
            {"api_tcp_without_token": True, "api": "off"},
            "api_tcp_without_token changes nothing: the API is off",
        ),
        (
            {"api_tcp_without_token": True, "api": "127.0.0.1:9", "api_token": "t"},
            "api_tcp_without_token changes nothing: the API is given a token",
        ),
        ({"federation_tls_ca": Path("/ca.pem")}, "federation_tls_ca is set, but not federation"),
        ({"client_timeout_s": 10.0}, "client_timeout 10 s is under 15 s"),
    ],
)
def test_a_setting_that_changes_nothing_is_said(
    tmp_path: Path, overrides: dict[str, Any], said: str
) -> None:
    (sentence,) = idle_settings(config(tmp_path, **overrides))
    assert sentence.startswith(said)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"api_tcp_without_token": True, "api": "127.0.0.1:9"},
        {"client_timeout_s": 10.0, "profiles": "legacy"},
        {"client_timeout_s": 15.0},
    ],
)
def test_settings_that_do_something_are_not(tmp_path: Path, overrides: dict[str, Any]) -> None:
    assert idle_settings(config(tmp_path, **overrides)) == []


async def test_config_check_prints_them_as_warnings(tmp_path: Path) -> None:
    check = Console()
    argv = ["config", "check", "--key-file", str(tmp_path / "k.pem"), "--bridge-legacy"]
    assert await check.run(*argv) == 0
    assert (
        "# warning: bridge_legacy changes nothing without authorized_keys"
        in check.stdout.getvalue()
    )
    assert check.err_lines() == []
