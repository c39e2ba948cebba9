"""The audit window walker against an in-memory log with the API's paging rules.

The log here is a plain list served the way /wiki/rest/api/audit serves it (newest first,
inclusive epoch-ms bounds, offset paging), so the walker's completeness and economy can be
checked on shapes the simulator would take long to build: huge ties, bursts, growth mid-read.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable

from tap_confluence.streams.audit.rows import record_id
from tap_confluence.streams.audit.walker import AuditWindowWalker
from tap_confluence.streams.audit.windows import Window
from tests.support.audit_log import Log


def _ids(windows: Iterable[Window]) -> list[str]:
    return [rid for w in windows for rid, _ in w.records]


def test_walk_returns_every_record_once_oldest_first_despite_ties_across_pages() -> None:
    rng = random.Random(7)
    dates = sorted(rng.randrange(0, 50_000) for _ in range(3000))
    dates += [25_000] * 37  # a millisecond holding more than three pages
    log = Log(sorted(dates))
    walker = AuditWindowWalker(log.fetch, page_size=10, target_pages=4, initial_width_ms=100)
    windows = list(walker.walk(0, 60_000))
    ids = _ids(windows)
    assert Counter(ids) == Counter(record_id(r) for r in log.records)
    flat = [(r["creationDate"], rid) for w in windows for rid, r in w.records]
    assert flat == sorted(flat)
    # Windows tile the range without gaps or overlaps.
    assert windows[0].start_ms == 0
    assert windows[-1].end_ms == 60_000
    assert all(a.end_ms + 1 == b.start_ms for a, b in itertools.pairwise(windows))


def test_records_added_while_a_window_is_read_are_neither_lost_nor_shifting_pages() -> None:
    log = Log(list(range(0, 20_000, 10)))  # 2000 records, one per 10 ms
    late_dates = iter(range(5_005, 19_000, 400))

    def grow(current: Log) -> None:
        # After every request, a late record lands in the past and a new one at the newest
        # end (beyond the frozen upper bound).
        date = next(late_dates, None)
        if date is not None:
            current.append(date)
        current.append(30_000 + len(current.records))

    log.on_fetch = grow
    walker = AuditWindowWalker(log.fetch, page_size=50, target_pages=3, initial_width_ms=500)
    windows = list(walker.walk(0, 20_000))
    got = Counter(_ids(windows))
    base = [r for r in log.records if r["creationDate"] < 5_000 or r["creationDate"] % 10 == 0]
    # Every record that existed in the range when the walk started is there, once.
    assert all(got[record_id(r)] == 1 for r in base if r["creationDate"] <= 20_000)
    # Nothing newer than the frozen upper bound is returned.
    assert max(r["creationDate"] for w in windows for _, r in w.records) <= 20_000


def test_request_count_stays_within_a_few_percent_of_records_per_page() -> None:
    rng = random.Random(3)
    log = Log(sorted(rng.randrange(0, 10_000_000) for _ in range(60_000)))
    walker = AuditWindowWalker(log.fetch, page_size=100, target_pages=10, initial_width_ms=1_000)
    windows = list(walker.walk(0, 10_000_000))
    assert len(_ids(windows)) == 60_000
    ideal = 60_000 / 100
    assert walker.requests <= ideal * 1.08 + 12, walker.requests


def test_a_burst_narrows_windows_so_no_window_holds_much_more_than_its_cap() -> None:
    sparse = list(range(0, 1_000_000, 5_000))  # 200 records spread thin
    burst = [600_000 + i // 3 for i in range(5_000)]  # 5000 records in ~1.7 s
    log = Log(sorted(sparse + burst))
    walker = AuditWindowWalker(
        log.fetch, page_size=100, target_pages=5, max_pages=10, initial_width_ms=200_000
    )
    windows = list(walker.walk(0, 1_000_000))
    assert len(_ids(windows)) == len(log.records)
    assert max(len(w.records) for w in windows) <= walker.max_records + walker.page_size
    assert walker.narrowed >= 1


def test_empty_stretches_cost_few_requests() -> None:
    log = Log([10**9, 10**9 + 5])  # two records after a long empty stretch
    walker = AuditWindowWalker(log.fetch, page_size=1000, initial_width_ms=3_600_000)
    windows = list(walker.walk(0, 2 * 10**9))
    assert len(_ids(windows)) == 2
    assert walker.requests <= 12


def test_record_id_is_stable_and_ignores_key_order() -> None:
    a = {"creationDate": 1, "summary": "x", "author": {"accountId": "1", "type": "user"}}
    b = {"author": {"type": "user", "accountId": "1"}, "summary": "x", "creationDate": 1}
    assert record_id(a) == record_id(b)
    assert record_id(a) != record_id({**a, "summary": "y"})
    assert len(record_id(a)) == 64


def test_request_count_stays_low_when_the_log_starts_long_after_the_lower_bound() -> None:
    # The shape of a first run without start_date: decades of nothing, then a year of log.
    rng = random.Random(5)
    start = 1_700_000_000_000
    log = Log(sorted(start + rng.randrange(0, 30_000_000_000) for _ in range(60_000)))
    walker = AuditWindowWalker(log.fetch, page_size=100, target_pages=10)
    windows = list(walker.walk(0, start + 30_000_000_000))
    assert len(_ids(windows)) == 60_000
    ideal = 60_000 / 100
    assert walker.requests <= ideal * 1.08 + 25, (walker.requests, walker.narrowed)
