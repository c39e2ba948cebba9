"""The users stream's limits: user/bulk batches and search/user's 10,000-user cap."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from simulator.process import SimulatorProcess
from tap_confluence.streams.users import BULK_MAX_IDS, BULK_MAX_QUERY_BYTES, bulk_batches
from tests.support.tap_cli import run_tap


def test_bulk_batches_stay_under_200_ids_and_the_request_line_limit() -> None:
    # Real accountIds run to 43 characters, and ':' is sent percent-encoded.
    ids = [f"557058:{i:08d}-aaaa-bbbb-cccc-dddddddddddd" for i in range(1000)]
    assert all(len(i) == 43 for i in ids)
    batches = list(bulk_batches(ids))
    assert [x for b in batches for x in b] == ids
    for batch in batches:
        assert len(batch) <= BULK_MAX_IDS
        query = "&".join(f"accountId={quote(x, safe='')}" for x in batch)
        assert len(query) <= BULK_MAX_QUERY_BYTES
    # Short ids fill a batch up to the 200-id limit.
    assert [len(b) for b in bulk_batches([str(i) for i in range(450)])] == [200, 200, 50]


@pytest.mark.slow
def test_hitting_the_search_cap_is_reported_loudly_not_silently(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(users=10_050, guests=2, audit_records=10, groups=2)
    run = run_tap(tmp_path, sim.tap_config("classic_token"))
    assert run.returncode == 0, run.stderr[-2000:]
    licensed = [u for u in run.records("users") if u["sitePermission"] == "licensed"]
    assert len(licensed) == 10_000
    warnings = [line for line in run.stderr.splitlines() if "per-query cap" in line]
    assert len(warnings) == 1
    assert "WARNING" in warnings[0]
    assert "may be incomplete" in warnings[0]
    # Every user/bulk call was accepted (the simulator refuses lines over 8 KiB with a 400),
    # and 10,052 users needed no more calls than 200-id batches under 8 KiB allow.
    stats = sim.stats()
    bulk = stats["responses"]["user_bulk"]
    assert set(bulk) == {"200"}, bulk
    assert 10_052 / 200 < sum(bulk.values()) <= 10_052 // 140 + 2
    # 50 full pages of licensed users (the listing stops at the cap); guests: one page, then
    # the empty page that alone ends a search/user listing (a short page may be capped).
    assert stats["requests"]["search_user"] == 10_000 // 200 + 2

    # Asked to fail instead: the same cap ends users with that sentence and fails the run,
    # after the other streams have loaded.
    strict = run_tap(tmp_path, sim.tap_config("classic_token", fail_on_user_search_cap=True))
    assert strict.returncode == 1
    assert "fail_on_user_search_cap is set, so the run fails" in strict.stderr
    assert "audit_records" in strict.streams_with_records()
