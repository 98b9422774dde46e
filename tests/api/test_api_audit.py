"""A log line for each kick, ban, ban lifted and message posted through the API, within
a budget that an API client in a loop cannot exhaust into the journal."""

import logging
from pathlib import Path

import pytest
import trio
import trio.testing
from api_support import api_daemon, client_id
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.api.audit import POST_LOG_BURST, AdminLog
from mcrelay.protocol.legacy.events import PeerJoined
from support import join, next_event, raw_peer

Keys = list[rsa.RSAPrivateKey]


def admin_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mcrelay.api.audit"]


async def test_each_admin_action_is_one_line(
    relay_key_file: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    """They left no trace in the log (found by review). A message's size is said, never
    its text."""
    caplog.set_level(logging.INFO, logger="mcrelay.api.audit")
    async with api_daemon(relay_key_file) as api, join(api.relay, keys[1]) as a:
        async with raw_peer(api.relay, keys[2]) as raw:
            await raw.register()
            assert await next_event(a) == PeerJoined(raw.address)
            ident = client_id(raw.address)
            kick = {"ban_s": "0.5"}
            assert (await api.http.delete(f"/v1/clients/{ident}", params=kick)).status_code == 200
        ban = {"id": "10.9.9.9", "ban_s": 31536000}
        assert (await api.http.post("/v1/bans", json=ban)).status_code == 201
        assert (await api.http.delete("/v1/bans/10.9.9.9")).status_code == 200
        assert (await api.http.delete("/v1/bans/10.9.9.9")).status_code == 404
        posted = await api.http.post("/v1/messages", json={"text": "maintenance"})
        assert posted.status_code == 200
    assert admin_lines(caplog) == [
        f"API: kicked {ident}, banned (address) for 0.5 s; 1 removed",
        "API: banned 10.9.9.9 (host) for 31536000 s; 0 removed",
        "API: lifted the ban on 10.9.9.9 (host)",
        "API: posted 11 bytes to everyone here; 1 copies sent here",
    ]


async def test_posts_have_a_budget_and_the_next_says_what_it_held_back(
    mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcrelay.api.audit")
    admin = AdminLog()
    for n in range(POST_LOG_BURST + 10):
        admin.post("API: posted %d bytes to everyone here; 0 copies sent here", n)
    assert len(admin_lines(caplog)) == POST_LOG_BURST
    mock_clock.jump(1.0)
    admin.post("API: posted 1 bytes to everyone here; 0 copies sent here")
    assert admin_lines(caplog)[-1] == (
        "API: posted 1 bytes to everyone here; 0 copies sent here "
        "(10 more posts not logged before this one)"
    )


async def test_no_ban_hides_behind_posts(
    mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Fifty posts spent a budget the bans shared: the ban after them was never logged,
    not even as a count (found by review). Kicks, bans and lifts are logged, always."""
    caplog.set_level(logging.INFO, logger="mcrelay.api.audit")
    admin = AdminLog()
    for n in range(POST_LOG_BURST + 10):
        admin.post("API: posted %d bytes to everyone here; 0 copies sent here", n)
    for n in range(POST_LOG_BURST + 10):
        admin.action("API: banned 10.0.0.%d (host) for 86400 s; 0 removed", n)
    banned = [line for line in admin_lines(caplog) if line.startswith("API: banned")]
    assert len(banned) == POST_LOG_BURST + 10
