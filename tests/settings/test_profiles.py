"""The profiles served, decided in one place, and the secure profile's settings."""

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.protocol.secure.keys import AuthorizedKey
from mcrelay.settings.config import ConfigValueError, RelayConfig
from mcrelay.settings.profiles import profile_list, served_profiles
from mcrelay.settings.resolve import SettingsError, resolve

KEY = AuthorizedKey(bytes(32), "alice")


def config(tmp_path: Path, **overrides: Any) -> RelayConfig:
    if overrides.get("authorized_keys") is not None:
        overrides.setdefault("authorized_key_list", (KEY,))
    return RelayConfig(key_file=tmp_path / "relay-key.pem", **overrides)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("legacy,secure", "legacy,secure"),
        ("secure,legacy", "legacy,secure"),
        (" Secure , LEGACY ", "legacy,secure"),
        ("secure", "secure"),
        ("legacy", "legacy"),
    ],
)
def test_a_profile_list_is_written_one_way(text: str, value: str) -> None:
    assert profile_list(text) == value


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "names no profile"),
        ("  ", "names no profile"),
        ("legacy,", "'' is not a profile"),
        ("tls", "'tls' is not a profile (legacy or secure)"),
        ("secure,secure", "names secure twice"),
        ("legacy;secure", "is not a profile"),
    ],
)
def test_an_empty_unknown_or_repeated_profile_is_refused(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        profile_list(text)


@given(st.text(max_size=30))
def test_any_text_is_a_profile_list_or_a_value_error(text: str) -> None:
    try:
        value = profile_list(text)
    except ValueError:
        return
    assert value in ("legacy", "secure", "legacy,secure")
    assert profile_list(value) == value


@pytest.mark.parametrize(
    ("profiles", "restricted", "bridge", "served"),
    [
        (None, False, False, ("legacy", "secure")),
        (None, False, True, ("legacy", "secure")),
        (None, True, False, ("secure",)),
        (None, True, True, ("legacy", "secure")),
        ("secure", False, False, ("secure",)),
        ("legacy", False, False, ("legacy",)),
        ("secure", True, False, ("secure",)),
        ("legacy,secure", True, True, ("legacy", "secure")),
    ],
)
def test_the_profiles_served(
    tmp_path: Path,
    profiles: str | None,
    restricted: bool,
    bridge: bool,
    served: tuple[str, ...],
) -> None:
    assert served_profiles(profiles, restricted=restricted, bridge_legacy=bridge) == served
    authorized = tmp_path / "authorized-keys" if restricted else None
    made = config(tmp_path, profiles=profiles, authorized_keys=authorized, bridge_legacy=bridge)
    assert made.served_profiles == served
    assert made.legacy_bridged == (restricted and "legacy" in served)


@pytest.mark.parametrize(
    ("overrides", "field", "says"),
    [
        (
            {"profiles": "legacy,secure", "authorized_keys": Path("a")},
            "profiles",
            "profiles names legacy, but with authorized_keys the legacy profile is off unless "
            "bridge_legacy is on",
        ),
        (
            {"profiles": "legacy", "authorized_keys": Path("a"), "bridge_legacy": True},
            "authorized_keys",
            "authorized_keys restricts the secure profile's members, and profiles leaves that "
            "profile out",
        ),
        (
            {"profiles": "secure", "bridge_legacy": True},
            "bridge_legacy",
            "bridge_legacy serves the legacy profile, and profiles leaves it out",
        ),
        (
            {"authorized_keys": Path("a"), "authorized_key_list": None},
            "authorized_keys",
            "authorized_keys and the keys read from it go together",
        ),
        (
            {"authorized_key_list": (KEY,)},
            "authorized_keys",
            "authorized_keys and the keys read from it go together",
        ),
        (
            {"secure_key_file": Path("x/k.pem"), "key_file": Path("x/k.pem")},
            "secure_key_file",
            "secure_key_file and key_file are both x/k.pem",
        ),
        ({"key_file": Path("x/relay-secure.key")}, "secure_key_file", "each key needs its own"),
        # The same file written otherwise (found by review).
        (
            {"secure_key_file": Path("x/../x/k.pem"), "key_file": Path("x/k.pem")},
            "secure_key_file",
            "each key needs its own",
        ),
        (
            {"secure_key_file": Path("x/k.pem").absolute(), "key_file": Path("x/k.pem")},
            "secure_key_file",
            "each key needs its own",
        ),
        ({"cookies": "never"}, "cookies", "cookies 'never' is not one of auto, always"),
        ({"profiles": "tls"}, "profiles", "'tls' is not a profile"),
    ],
)
def test_settings_that_contradict_each_other_are_refused_naming_one(
    tmp_path: Path, overrides: dict[str, Any], field: str, says: str
) -> None:
    overrides = {"key_file": tmp_path / "relay-key.pem", **overrides}
    if overrides.get("authorized_keys") is not None:
        overrides.setdefault("authorized_key_list", (KEY,))
    with pytest.raises(ConfigValueError) as caught:
        RelayConfig(**overrides)
    assert caught.value.field == field
    assert says in str(caught.value)


def test_the_secure_key_file_is_beside_the_rsa_key_unless_given(tmp_path: Path) -> None:
    assert config(tmp_path).secure_key_path == tmp_path / "relay-secure.key"
    given_path = tmp_path / "elsewhere" / "secure.key"
    assert config(tmp_path, secure_key_file=given_path).secure_key_path == given_path
    resolved = resolve({"key_file": tmp_path / "keys" / "rsa.pem"}, {}, None)
    assert resolved.config.secure_key_file == tmp_path / "keys" / "relay-secure.key"
    assert resolved.sources["secure_key_file"] == "default"
    environ = {"MCRELAY_SECURE_KEY_FILE": str(given_path)}
    resolved = resolve({"key_file": tmp_path / "rsa.pem"}, environ, None)
    assert resolved.config.secure_key_file == given_path
    assert resolved.sources["secure_key_file"] == "env MCRELAY_SECURE_KEY_FILE"


def test_the_default_secure_key_follows_the_default_rsa_key() -> None:
    config = resolve({}, {"STATE_DIRECTORY": "/var/lib/mcrelay"}, None).config
    assert config.key_file == Path("/var/lib/mcrelay/relay-key.pem")
    assert config.secure_key_path == Path("/var/lib/mcrelay/relay-secure.key")


def test_the_secure_settings_from_flags_environment_and_file(tmp_path: Path) -> None:
    path = tmp_path / "mcrelay.toml"
    path.write_text("[relay]\nprofiles = 'secure'\n[secure]\ncookies = 'always'\n")
    resolved = resolve({}, {}, path)
    assert resolved.config.served_profiles == ("secure",)
    assert resolved.config.cookies == "always"
    environ = {"MCRELAY_PROFILES": "legacy", "MCRELAY_COOKIES": "AUTO"}
    resolved = resolve({}, environ, path)
    assert resolved.config.served_profiles == ("legacy",)
    assert resolved.config.cookies == "auto"
    path.write_text("[secure]\nbridge_legacy = 'yes'\n")
    with pytest.raises(
        SettingsError, match=re.escape("'secure.bridge_legacy' must be true or false")
    ):
        resolve({}, {}, path)
    path.write_text("[relay]\nprofiles = ''\n")
    with pytest.raises(SettingsError, match=re.escape(f"{path}: 'relay.profiles': '' names")):
        resolve({}, {}, path)
    with pytest.raises(SettingsError, match="MCRELAY_PROFILES: 'legacy,tls'"):
        resolve({}, {"MCRELAY_PROFILES": "legacy,tls"}, None)


def test_authorized_names_by_key(tmp_path: Path) -> None:
    bob = AuthorizedKey(bytes([1]) * 32, "bob")
    made = config(tmp_path, authorized_keys=tmp_path / "a", authorized_key_list=(KEY, bob))
    assert made.authorized_names() == {bytes(32): "alice", bytes([1]) * 32: "bob"}
    assert config(tmp_path).authorized_names() is None


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"client_timeout_s": 0.01}, "client timeout must be 0.1 to 86400 seconds"),
        ({"registrations_per_host_per_s": 0.0}, "registrations per host per s must be"),
    ],
)
def test_a_value_out_of_range_is_said_by_its_settings_name(
    tmp_path: Path, overrides: dict[str, Any], says: str
) -> None:
    """'client timeout s must be 0.1 to 86400 seconds' (found by review)."""
    with pytest.raises(ConfigValueError) as caught:
        RelayConfig(key_file=tmp_path / "relay-key.pem", **overrides)
    assert str(caught.value).startswith(says), str(caught.value)
