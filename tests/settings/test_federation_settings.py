"""The federation's settings: URLs, names, and the cluster key it cannot go without."""

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.cli.status import ExitStatus
from mcrelay.daemon.secure.keyfile import generate_secure_key_file
from mcrelay.federation.keyfile import ClusterKeyError, read_cluster_key, write_cluster_key
from mcrelay.protocol.federation.envelope import valid_relay_name
from mcrelay.service import read_federation_files
from mcrelay.settings.config import ConfigValueError, RelayConfig
from mcrelay.settings.federation import default_relay_name, name, nats_urls
from support import Console


def test_federation_is_off_by_default() -> None:
    assert RelayConfig().federation_servers == ()


def test_urls_are_listed_in_order() -> None:
    text = nats_urls(" nats://127.0.0.1:4222, tls://[::1]:4223")
    assert text == "nats://127.0.0.1:4222,tls://[::1]:4223"
    config = RelayConfig(federation=text, federation_key_file=Path("/k"))
    assert config.federation_servers == ("nats://127.0.0.1:4222", "tls://[::1]:4223")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "127.0.0.1:4222",
        "http://127.0.0.1:4222",
        "nats://127.0.0.1",
        "nats://127.0.0.1:99999",
        "nats://user:pw@127.0.0.1:4222",
        "nats://127.0.0.1:4222/path",
        "nats://127.0.0.1:4222,nats://127.0.0.1:4222",
        "nats://:4222",
    ],
)
def test_bad_urls_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"NATS|names|credentials"):
        nats_urls(text)


def test_federation_needs_the_cluster_key() -> None:
    with pytest.raises(ConfigValueError, match="federation_key_file") as caught:
        RelayConfig(federation="nats://127.0.0.1:4222")
    assert caught.value.field == "federation_key_file"


def test_credentials_or_nkey_not_both() -> None:
    with pytest.raises(ConfigValueError, match="not both"):
        RelayConfig(
            federation="nats://127.0.0.1:4222",
            federation_key_file=Path("/k"),
            federation_credentials=Path("/c"),
            federation_nkey_file=Path("/n"),
        )


@pytest.mark.parametrize(
    ("overrides", "other"),
    [
        (
            {"secure_key_file": Path("x/sec.key"), "federation_key_file": Path("x/sec.key")},
            "secure_key_file",
        ),
        ({"key_file": Path("x/k.pem"), "federation_key_file": Path("x/../x/k.pem")}, "key_file"),
        (
            {"key_file": Path("x/k.pem"), "federation_key_file": Path("x/relay-secure.key")},
            "secure_key_file",
        ),
    ],
)
def test_the_cluster_key_is_not_one_of_the_relays_own_keys(
    overrides: dict[str, Any], other: str
) -> None:
    """The cluster key is copied to every relay: config check passed the relay's secure
    key given as the cluster key (found by review)."""
    with pytest.raises(ConfigValueError, match="each key needs its own file") as caught:
        RelayConfig(federation="nats://127.0.0.1:4222", **overrides)
    assert caught.value.field == "federation_key_file"
    assert caught.value.others == (other,)


@pytest.mark.parametrize("how", ["copy", "hard link"])
def test_a_copy_of_the_relays_secure_key_is_no_cluster_key(tmp_path: Path, how: str) -> None:
    """The settings compare paths: a copy of the secure key file, or a hard link to it,
    passed as the cluster key (found by review). The keys themselves are compared."""
    secure = generate_secure_key_file(tmp_path / "relay-secure.key")
    cluster = tmp_path / "cluster.key"
    if how == "copy":
        shutil.copyfile(tmp_path / "relay-secure.key", cluster)
        cluster.chmod(0o600)
    else:
        os.link(tmp_path / "relay-secure.key", cluster)
    config = RelayConfig(
        federation="nats://127.0.0.1:4222",
        key_file=tmp_path / "relay-key.pem",
        federation_key_file=cluster,
    )
    assert read_cluster_key(cluster) == secure.private  # the same format: it was taken
    with pytest.raises(ClusterKeyError, match="holds the relay's own secure private key"):
        read_federation_files(config)


@pytest.mark.parametrize("text", ["", "a.b", "a/b", "a b", "x" * 65, "é"])
def test_bad_names_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a name"):
        name(text)
    with pytest.raises(ConfigValueError):
        RelayConfig(relay_name=text)


@given(st.integers(min_value=0, max_value=65535))
def test_the_default_relay_name_is_a_name(port: int) -> None:
    assert valid_relay_name(default_relay_name(port))
    assert default_relay_name(port).endswith(f"-{port}")


async def test_config_check_reads_the_federation_files_as_the_daemon_would(
    tmp_path: Path,
) -> None:
    """It said "all settings valid" of a cluster key or CA that is not there; the daemon
    then exited 2, or retried forever."""
    key = tmp_path / "federation.key"
    flags = ["config", "check", "--key-file", str(tmp_path / "k.pem")]
    flags += ["--federation", "nats://127.0.0.1:4222", "--federation-key-file", str(key)]
    console = Console()
    assert await console.run(*flags) == ExitStatus.USAGE
    assert f"cluster key file {key}" in console.err_lines()[-1]
    write_cluster_key(key, parents=False)
    assert await Console().run(*flags) == ExitStatus.OK
    ca = tmp_path / "ca.pem"
    console = Console()
    assert await console.run(*flags, "--federation-tls-ca", str(ca)) == ExitStatus.USAGE
    assert f"NATS TLS CA file {ca}" in console.err_lines()[-1]
