"""The secure profile's settings in the daemon: its key and the profiles at start, the
authorized keys on reload (a bad file keeps the running list), a restart for the rest."""

import dataclasses
import logging
import os
import signal
import time
from functools import partial
from pathlib import Path

import pytest
import trio

from mcrelay import service
from mcrelay.daemon.legacy.keyfile import generate_key_file
from mcrelay.daemon.notify import Notifier
from mcrelay.daemon.secure.keyfile import load_or_create_secure_key
from mcrelay.protocol.secure.keys import AuthorizedKey, encode_key
from mcrelay.service import Daemon, run_daemon
from mcrelay.settings.config import RelayConfig
from mcrelay.settings.resolve import resolve
from mcrelay.settings.table import live_changes, reloadable
from support import wait_until

ALICE = bytes(range(32))
BOB = bytes(range(1, 33))


def keys_text(*entries: tuple[bytes, str]) -> str:
    return "".join(f"{encode_key(key)} {name}\n" for key, name in entries)


class Harness:
    """A daemon configured by a file the test rewrites, and a channel of signals."""

    def __init__(self, tmp_path: Path, key_file: Path) -> None:
        self.file = tmp_path / "mcrelay.toml"
        self.authorized = tmp_path / "authorized-keys"
        self.key_file = key_file
        self.send_signal, self._signals = trio.open_memory_channel[int](8)

    def write(self, extra: str) -> None:
        self.file.write_text(
            f"port = 0\ninterface = '127.0.0.1'\napi = 'off'\nkey_file = '{self.key_file}'\n"
            + extra
        )

    def load(self) -> RelayConfig:
        return resolve({}, {}, self.file).config

    async def start(self, nursery: trio.Nursery) -> Daemon:
        run = partial(
            run_daemon,
            self.load(),
            self._signals,
            reload=self.load,
            settings_file=self.file,
            notifier=Notifier({}),
        )
        daemon: Daemon = await nursery.start(run)
        return daemon


def child_processes() -> list[str]:
    """This process's children, whichever of its threads started them."""
    tasks = Path(f"/proc/{os.getpid()}/task").glob("*/children")
    return [child for task in tasks for child in task.read_text().split()]


def outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in caplog.messages if m.startswith(("reload failed", "configuration"))]


async def reload(harness: Harness, caplog: pytest.LogCaptureFixture) -> str:
    done = len(outcomes(caplog))
    await harness.send_signal.send(signal.SIGHUP)
    await wait_until(lambda: len(outcomes(caplog)) > done)
    return outcomes(caplog)[-1]


async def test_the_daemon_makes_and_logs_its_secure_key_beside_the_rsa_one(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    harness = Harness(tmp_path, relay_key_file)
    harness.write("")
    async with trio.open_nursery() as nursery:
        await harness.start(nursery)
        nursery.cancel_scope.cancel()
    secure = load_or_create_secure_key(tmp_path / "relay-secure.key")
    listening = next(i for i, m in enumerate(caplog.messages) if m.startswith("relay listening"))
    assert caplog.messages[listening + 1] == (
        f"profiles=legacy,secure secure_key={encode_key(secure.public)}"
    )
    assert f"created secure relay key {tmp_path / 'relay-secure.key'}" in caplog.messages


async def test_a_legacy_only_relay_makes_no_secure_key(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    harness = Harness(tmp_path, relay_key_file)
    harness.write("profiles = 'legacy'\n")
    async with trio.open_nursery() as nursery:
        await harness.start(nursery)
        assert child_processes()  # its RSA workers
        nursery.cancel_scope.cancel()
    assert "profiles=legacy" in caplog.messages
    assert not (tmp_path / "relay-secure.key").exists()


async def test_a_secure_only_relay_makes_no_rsa_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With legacy not served (``profiles = 'secure'``, or authorized keys without
    ``bridge_legacy``), an RSA key was made, logged and its worker started all the same,
    for nothing (found by review): none of them now."""
    caplog.set_level(logging.INFO)
    key_file = tmp_path / "relay-key.pem"
    harness = Harness(tmp_path, key_file)
    harness.write("profiles = 'secure'\n")
    async with trio.open_nursery() as nursery:
        daemon = await harness.start(nursery)
        assert daemon.relay.fingerprint is None
        assert daemon.relay.legacy is None
        assert list(daemon.relay.statistics().profiles) == ["secure"]
        assert child_processes() == []  # no RSA workers
        nursery.cancel_scope.cancel()
    assert not key_file.exists()
    [listening] = [m for m in caplog.messages if m.startswith("relay listening")]
    assert "fingerprint" not in listening
    assert "RSA" not in "\n".join(caplog.messages)


async def test_a_bridged_relay_warns_at_start(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    harness = Harness(tmp_path, relay_key_file)
    harness.authorized.write_text(keys_text((ALICE, "alice")))
    harness.write(f"authorized_keys = '{harness.authorized}'\nbridge_legacy = true\n")
    async with trio.open_nursery() as nursery:
        await harness.start(nursery)
        nursery.cancel_scope.cancel()
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == (
        "a bridged legacy member reads and can send everything: this relay has "
        "legacy-level confidentiality"
    )
    assert any(
        m.startswith("profiles=legacy,secure secure_key=") and m.endswith(" authorized_keys=1")
        for m in caplog.messages
    )


async def test_authorized_keys_are_read_again_on_reload_and_a_bad_file_keeps_them(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    harness = Harness(tmp_path, relay_key_file)
    harness.authorized.write_text(keys_text((ALICE, "alice")))
    harness.write(f"[secure]\nauthorized_keys = '{harness.authorized}'\n")
    async with trio.open_nursery() as nursery:
        daemon = await harness.start(nursery)
        assert daemon.relay.config.authorized_names() == {ALICE: "alice"}

        harness.authorized.write_text(keys_text((ALICE, "alice"), (BOB, "bob")))
        assert await reload(harness, caplog) == "configuration reloaded; changed: authorized_keys"
        assert daemon.relay.config.authorized_names() == {ALICE: "alice", BOB: "bob"}

        harness.authorized.write_text(keys_text((BOB, "bob")) + "oops\n")
        outcome = await reload(harness, caplog)
        assert outcome == (
            "reload failed, the running configuration stays: authorized keys file "
            f"{harness.authorized}: line 2: a key is 44 characters of base64, 'oops' has 4"
        )
        assert daemon.relay.config.authorized_names() == {ALICE: "alice", BOB: "bob"}

        harness.authorized.chmod(0o666)
        assert "group or others may change it" in await reload(harness, caplog)
        harness.authorized.unlink()
        assert "No such file or directory" in await reload(harness, caplog)
        assert daemon.relay.config.authorized_names() == {ALICE: "alice", BOB: "bob"}

        harness.authorized.write_text(keys_text((BOB, "bob")))
        assert await reload(harness, caplog) == "configuration reloaded; changed: authorized_keys"
        assert daemon.relay.config.authorized_names() == {BOB: "bob"}

        # An empty file (half-written, say) is valid, and said: it was silent.
        harness.authorized.write_text("# none yet\n")
        assert await reload(harness, caplog) == "configuration reloaded; changed: authorized_keys"
        assert "the authorized keys list no key" in caplog.text
        nursery.cancel_scope.cancel()


async def test_giving_an_authorized_keys_file_on_reload_waits_for_a_restart(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It would turn the legacy profile off under its members: the profiles are fixed at
    start. The rest of the reload applies."""
    caplog.set_level(logging.INFO)
    harness = Harness(tmp_path, relay_key_file)
    harness.write("")
    harness.authorized.write_text(keys_text((ALICE, "alice")))
    async with trio.open_nursery() as nursery:
        daemon = await harness.start(nursery)
        harness.write(
            f"authorized_keys = '{harness.authorized}'\nclient_timeout = 9\ncookies = 'always'\n"
        )
        assert await reload(harness, caplog) == (
            "configuration reloaded; changed: cookies, client_timeout"
        )
        assert "reload: authorized_keys cannot change while running; restart to apply" in (
            caplog.messages
        )
        config = daemon.relay.config
        assert (config.authorized_keys, config.authorized_key_list) == (None, None)
        assert config.served_profiles == ("legacy", "secure")
        assert (config.client_timeout_s, config.cookies) == (9.0, "always")
        nursery.cancel_scope.cancel()


def test_what_a_reload_may_change(tmp_path: Path) -> None:
    base = RelayConfig(key_file=tmp_path / "relay-key.pem")
    one = (AuthorizedKey(ALICE, "alice"),)
    two = (AuthorizedKey(BOB, "bob"),)
    restricted = dataclasses.replace(base, authorized_keys=tmp_path / "a", authorized_key_list=one)
    other_file = dataclasses.replace(
        restricted, authorized_keys=tmp_path / "b", authorized_key_list=two
    )

    merged, fixed = reloadable(restricted, other_file)
    assert (merged, fixed) == (other_file, [])
    assert live_changes(restricted, other_file) == ["authorized_keys"]
    new_keys = dataclasses.replace(restricted, authorized_key_list=two)
    assert live_changes(restricted, new_keys) == ["authorized_keys"]

    assert reloadable(base, restricted) == (base, ["authorized_keys"])
    assert reloadable(restricted, base) == (restricted, ["authorized_keys"])

    secure_only = dataclasses.replace(base, profiles="secure")
    restricted_secure = dataclasses.replace(restricted, profiles="secure")
    assert reloadable(secure_only, restricted_secure) == (restricted_secure, [])
    assert reloadable(restricted_secure, secure_only) == (secure_only, [])

    bridged = dataclasses.replace(restricted, bridge_legacy=True)
    open_bridged = dataclasses.replace(base, bridge_legacy=True)
    assert reloadable(bridged, open_bridged) == (open_bridged, [])

    moved = dataclasses.replace(base, secure_key_file=tmp_path / "x.key", cookies="always")
    merged, fixed = reloadable(base, moved)
    assert fixed == ["secure_key_file"]
    assert (merged.secure_key_file, merged.cookies) == (None, "always")


def test_a_reload_giving_bridge_legacy_and_authorized_keys_together_keeps_both(
    tmp_path: Path,
) -> None:
    # Found in review: on a relay serving profiles=legacy,secure, a reload adding both
    # (bridge_legacy waits for a restart, authorized_keys is live) was refused, telling
    # the operator to give the bridge_legacy just given, and lost the other changes.
    named = RelayConfig(key_file=tmp_path / "relay-key.pem", profiles="legacy,secure")
    both = dataclasses.replace(
        named,
        bridge_legacy=True,
        authorized_keys=tmp_path / "a",
        authorized_key_list=(AuthorizedKey(ALICE, "alice"),),
        cookies="always",
    )
    merged, fixed = reloadable(named, both)
    assert sorted(fixed) == ["authorized_keys", "bridge_legacy"]
    assert (merged.authorized_keys, merged.bridge_legacy, merged.cookies) == (None, False, "always")


async def test_a_reload_that_sets_the_level_to_warning_is_still_said(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The new level was applied before the line that says the reload: a reload to
    warning left no trace in the log (found by review)."""
    caplog.set_level(logging.INFO)
    harness = Harness(tmp_path, relay_key_file)
    harness.write("")
    async with trio.open_nursery() as nursery:
        await harness.start(nursery)
        harness.write("log_level = 'warning'\n")
        assert await reload(harness, caplog) == "configuration reloaded; changed: log_level"
        harness.write("log_level = 'info'\n")  # and back: said at info (review)
        assert await reload(harness, caplog) == "configuration reloaded; changed: log_level"
        nursery.cancel_scope.cancel()
    logging.getLogger().setLevel(logging.INFO)


def replace_key(path: Path) -> None:
    """At once, as an operator's ``mv`` does: the file is never missing (unlinked first,
    then made, a slow machine's check of the reload before saw it gone)."""
    made = path.with_name(path.name + ".new")
    generate_key_file(made)
    made.replace(path)


def remove(path: Path) -> None:
    path.unlink()


async def test_a_reload_says_when_a_key_file_no_longer_holds_the_running_key(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key replaced or removed while the daemon ran went unnoticed until the next
    start, which then had another key, or made one (found by review). Said after the
    reload's own line: the key files are read apart, so that a slow one cannot cost the
    settings (found by the next review)."""
    caplog.set_level(logging.INFO)
    harness = Harness(tmp_path, relay_key_file)
    harness.write("")

    def notes() -> list[str]:
        return [m for m in caplog.messages if m.startswith("reload: ")]

    async with trio.open_nursery() as nursery:
        daemon = await harness.start(nursery)
        running = daemon.relay.fingerprint
        assert await reload(harness, caplog) == "configuration reloaded; no setting changed"
        replace_key(relay_key_file)
        assert await reload(harness, caplog) == "configuration reloaded; no setting changed"
        await wait_until(lambda: len(notes()) == 1)
        assert notes()[0].startswith(f"reload: {relay_key_file} holds SHA256:")
        assert notes()[0].endswith(f": the relay runs on with {running} until a restart")
        secure_key = daemon.relay.config.secure_key_path
        remove(secure_key)
        await reload(harness, caplog)
        await wait_until(lambda: len(notes()) == 3)  # the RSA key's again, and this one
        assert notes()[2] == (
            f"reload: {secure_key} is gone: the relay runs on with {daemon.relay.secure_key}; "
            "a restart makes a new key"
        )
        nursery.cancel_scope.cancel()


async def test_a_slow_key_file_costs_the_reload_nothing(
    tmp_path: Path,
    relay_key_file: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read with the settings, under their deadline, a slow key file failed the whole
    reload, said as the settings' fault (found by review)."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(service, "key_file_notes", slow_notes)
    harness = Harness(tmp_path, relay_key_file)
    harness.write("")
    async with trio.open_nursery() as nursery:
        daemon = await harness.start(nursery)
        harness.write("client_timeout = 12\n")
        await service.apply_reload(daemon, harness.load, timeout_s=0.2)
        assert daemon.relay.config.client_timeout_s == 12.0
        assert caplog.messages[-2:] == [
            "configuration reloaded; changed: client_timeout",
            "reload: the key files took over 0.2 s to read",
        ]
        nursery.cancel_scope.cancel()


def slow_notes(relay: object) -> list[str]:
    time.sleep(0.5)
    return []
