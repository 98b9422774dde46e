"""``mcrelay keygen --federation`` and ``mcrelay fingerprint --federation``: a cluster key made
and identified without ever being shown."""

import hashlib
import stat
from pathlib import Path

import pytest

from mcrelay.cli.status import ExitStatus
from mcrelay.federation.keyfile import cluster_key_text, read_cluster_key
from support import Console, assert_one_error_line


def assert_refused(console: Console, *fragments: str) -> None:
    assert_one_error_line(console, *fragments)
    assert console.stdout.getvalue() == ""


async def test_keygen_writes_a_cluster_key_and_prints_only_its_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    console = Console()
    assert await console.run("keygen", "--federation", str(path)) == ExitStatus.OK
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_cluster_key(path)
    assert console.out_lines() == [hashlib.sha256(key).hexdigest()[:16]]
    [said] = console.err_lines()
    assert said.startswith(f"mcrelay: wrote a new cluster key to {path}; every relay")
    text = path.read_text().strip()
    assert text not in console.stdout.getvalue() + console.stderr.getvalue()

    fingerprint = Console()
    assert await fingerprint.run("fingerprint", "--federation", str(path)) == ExitStatus.OK
    assert fingerprint.out_lines() == console.out_lines()
    assert fingerprint.stderr.getvalue() == ""


async def test_keygen_never_replaces_a_file_and_makes_directories_only_with_parents(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cluster.key"
    path.write_bytes(cluster_key_text(bytes(32)))
    path.chmod(0o600)
    again = Console()
    assert await again.run("keygen", "--federation", str(path)) == ExitStatus.USAGE
    assert_refused(again, str(path), "already exists")
    assert read_cluster_key(path) == bytes(32)
    deep = tmp_path / "etc" / "mcrelay" / "cluster.key"
    refused = Console()
    assert await refused.run("keygen", "--federation", str(deep)) == ExitStatus.USAGE
    assert_refused(refused, str(deep.parent), "--parents")
    made = Console()
    assert await made.run("keygen", "--federation", "--parents", str(deep)) == ExitStatus.OK
    assert len(read_cluster_key(deep)) == 32


@pytest.mark.parametrize(
    "argv",
    [
        ["keygen", "--federation", "--secure"],
        ["fingerprint", "--federation", "--public"],
    ],
)
async def test_one_kind_of_key_at_a_time(tmp_path: Path, argv: list[str]) -> None:
    console = Console()
    assert await console.run(*argv, str(tmp_path / "key")) == ExitStatus.USAGE
    assert_refused(console, "not allowed with argument")
    assert not (tmp_path / "key").exists()


@pytest.mark.parametrize(
    ("data", "mode", "fragment"),
    [
        (cluster_key_text(bytes(32)), 0o644, "chmod 600"),
        (b"hello\n", 0o600, "not a cluster key"),
        (cluster_key_text(bytes(31)), 0o600, "holds 31 bytes"),
    ],
)
async def test_fingerprint_refuses_what_the_daemon_would(
    tmp_path: Path, data: bytes, mode: int, fragment: str
) -> None:
    path = tmp_path / "cluster.key"
    path.write_bytes(data)
    path.chmod(mode)
    console = Console()
    assert await console.run("fingerprint", "--federation", str(path)) == ExitStatus.USAGE
    assert_refused(console, str(path), fragment)


async def test_fingerprint_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    console = Console()
    path = tmp_path / "missing.key"
    assert await console.run("fingerprint", "--federation", str(path)) == ExitStatus.USAGE
    assert_refused(console, str(path), "No such file")
