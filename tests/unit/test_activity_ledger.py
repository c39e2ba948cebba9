"""The user_activity ledger: what counts as new across runs, and the audit read shared in a run."""

from __future__ import annotations

from typing import Any

from tap_confluence.streams.activity.ledger import (
    Latest,
    Ledger,
    SharedAuditRead,
)
from tap_confluence.streams.audit.rows import audit_activity
from tap_confluence.tap import TapConfluence

HOUR = 3_600_000


def test_first_run_counts_everything_as_new() -> None:
    ledger = Ledger.load({}, None, HOUR, None)
    assert ledger.lower is None
    assert ledger.observe("a", 5)
    assert ledger.observe("b", 1)
    assert not ledger.observe("a", 4), "older than what was just emitted for a"


def test_activity_before_the_reread_window_is_never_new() -> None:
    ledger = Ledger.load({"recent": {}}, 10 * HOUR, HOUR, None)
    assert ledger.lower == 9 * HOUR
    assert not ledger.observe("a", 9 * HOUR - 1)
    assert ledger.observe("a", 9 * HOUR)


def test_start_date_raises_the_lower_bound_over_the_overlap() -> None:
    ledger = Ledger.load({"recent": {}}, 10 * HOUR, 5 * HOUR, 8 * HOUR)
    assert ledger.lower == 8 * HOUR


def test_remembered_users_are_new_only_with_newer_activity() -> None:
    state = {"recent": {"a": 10 * HOUR}}
    ledger = Ledger.load(state, 10 * HOUR, HOUR, None)
    assert not ledger.observe("a", 10 * HOUR), "the same activity, re-read in the overlap"
    assert ledger.observe("b", 9 * HOUR + 1), "late activity by someone not seen lately"
    assert ledger.observe("a", 10 * HOUR + 1)


def test_save_keeps_the_highest_bookmark_and_only_users_inside_the_next_overlap() -> None:
    ledger = Ledger.load({"recent": {"old": 9 * HOUR}}, 10 * HOUR, HOUR, None)
    ledger.observe("late", 9 * HOUR + 5)
    ledger.observe("new", 12 * HOUR)
    state: dict[str, Any] = {}
    assert ledger.save(state) == 12 * HOUR
    assert state["recent"] == {"new": 12 * HOUR}


def test_a_late_row_does_not_move_the_bookmark_back() -> None:
    ledger = Ledger.load({"recent": {}}, 10 * HOUR, HOUR, None)
    assert ledger.observe("late", 9 * HOUR + 5)
    assert ledger.save({}) == 10 * HOUR


def test_state_without_memory_treats_the_bookmark_as_known_for_everyone() -> None:
    ledger = Ledger.load({}, 10 * HOUR, HOUR, None)
    assert not ledger.observe("a", 10 * HOUR - 1)
    assert not ledger.observe("a", 10 * HOUR)
    assert ledger.observe("b", 10 * HOUR + 1)


def test_save_without_any_bookmark_writes_nothing() -> None:
    state: dict[str, Any] = {}
    assert Ledger.load({}, None, HOUR, None).save(state) is None
    assert state == {}


def test_latest_keeps_each_users_newest_and_skips_anonymous() -> None:
    latest = Latest()
    latest.offer("a", 5, "old")
    latest.offer("a", 9, "new")
    latest.offer("a", 7, "between")
    latest.offer(None, 99, "anonymous")
    latest.offer("b", 9, "tie")
    assert latest.oldest_first() == [("a", 9, "new"), ("b", 9, "tie")]
    assert latest.events == 4


def test_audit_records_become_activity_of_their_author_with_summary_and_object() -> None:
    latest = Latest()
    latest.offer_audit(
        [
            {
                "author": {"accountId": "a"},
                "creationDate": 7,
                "summary": "Space created",
                "affectedObject": {"name": "Engineering"},
            },
            {"author": {"type": "user"}, "creationDate": 8, "summary": "System event"},
            {"author": {"accountId": "b"}, "creationDate": 3, "summary": "User created"},
        ]
    )
    assert latest.oldest_first() == [
        ("b", 3, "User created"),
        ("a", 7, "Space created: Engineering"),
    ]


def test_shared_read_covers_only_once_complete_and_not_before_its_end() -> None:
    shared = SharedAuditRead()
    shared.begin(100, 200)
    shared.add(audit_activity({"author": {"accountId": "a"}, "creationDate": 150, "summary": "x"}))
    assert not shared.covers_up_from(100), "an unfinished read is never reused"
    shared.finish()
    assert shared.covers_up_from(50)
    assert shared.covers_up_from(200)
    assert not shared.covers_up_from(201)
    shared.begin(300, 400)
    assert not shared.complete
    assert shared.latest.by_user == {}


def _tap(select: set[str] | None = None) -> TapConfluence:
    config = {"site_url": "http://127.0.0.1:9", "email": "a@example.com", "api_token": "x" * 12}
    tap = TapConfluence(config=config)
    if select is None:
        return tap
    catalog = tap.catalog_dict
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = entry["tap_stream_id"] in select
    return TapConfluence(config=config, catalog=catalog)


def test_each_run_gets_its_own_shared_read_and_only_when_both_streams_are_selected() -> None:
    one, two = _tap(), _tap()
    one.before_run()
    two.before_run()
    assert isinstance(one.site.shared_audit, SharedAuditRead)
    assert one.site.shared_audit is not two.site.shared_audit
    alone = _tap({"audit_records"})
    alone.before_run()
    assert alone.site.shared_audit is None, "nobody to share the read with"
