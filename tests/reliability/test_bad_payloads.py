"""API payloads with missing fields, nulls, wrong types, new fields, NULs and 1 MB strings.

Each record is delivered as the API holds it, or conformed to the schema, or named in a
warning; never a traceback and never a silent drop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.process import SimulatorProcess
from tests.reliability.harness import FIGURES, Run, discover, run_inprocess, select_streams

pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
MEGABYTE = "x" * (1 << 20)
#: Drawn in place of the 1 MB string (hypothesis would print it whole); swapped before sending.
BIG = "<1 MB string>"
odd_values = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.text(max_size=5).map(lambda s: s + "\x00" + s),
    st.just(BIG),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _user(i: int) -> dict[str, Any]:
    return {
        "type": "known",
        "accountId": f"5fake{i:019d}",
        "accountType": "atlassian",
        "email": f"user{i}@example.com",
        "publicName": f"User {i}",
        "displayName": f"User {i}",
        "timeZone": "Europe/Stockholm",
        "isExternalCollaborator": False,
        "isGuest": False,
    }


def _audit(i: int) -> dict[str, Any]:
    return {
        "author": {"type": "user", "displayName": f"User {i}", "accountId": f"5fake{i:019d}"},
        "remoteAddress": "10.0.0.1",
        "creationDate": 1_767_225_600_000 + i * 1000,
        "summary": "User added to group",
        "description": "",
        "category": "Users and groups",
        "sysAdmin": False,
        "affectedObject": {"name": "team", "objectType": "Group"},
        "changedValues": [],
        "associatedObjects": [],
    }


@st.composite
def mutated(draw: st.DrawFn, make: Any, fields: list[str]) -> list[dict[str, Any]]:
    """A few records, each with up to three fields dropped, nulled, retyped or added."""
    records: list[dict[str, Any]] = [make(i) for i in range(draw(st.integers(1, 4)))]
    for record in records:
        for _ in range(draw(st.integers(0, 3))):
            field = draw(st.sampled_from([*fields, "brandNewField"]))
            if draw(st.booleans()) and field in record:
                record.pop(field)
            else:
                record[field] = draw(odd_values)
    return records


def _inflate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: MEGABYTE if v == BIG else v for k, v in r.items()} for r in records]


def _schema(run: Run, stream: str) -> dict[str, Any]:
    (message,) = [m for m in run.messages if m["type"] == "SCHEMA" and m["stream"] == stream]
    schema: dict[str, Any] = message["schema"]
    return schema


def _check(run: Run, stream: str, dropped: int) -> None:
    assert run.crashed is None, repr(run.crashed)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    if run.returncode != 0:
        run.assert_clean_failure()
        return
    validator = jsonschema.Draft7Validator(_schema(run, stream))
    for record in run.records(stream):
        errors = [e.message[:200] for e in validator.iter_errors(record)]
        assert not errors, f"{stream} record does not match its schema: {errors}"
    if dropped:
        warned = [ln for ln in run.stderr.splitlines() if "WARNING" in ln and stream in ln]
        assert warned, f"{dropped} {stream} records dropped silently"


@pytest.fixture(scope="module")
def sim(module_sims: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    return module_sims(users=2, guests=0, groups=1, audit_records=5)


@pytest.fixture(scope="module")
def config(sim: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sim.tap_config(
        "classic_token", start_date="2025-01-01T00:00:00Z", max_retry_wait_seconds=1
    )


@pytest.fixture(scope="module")
def catalog(config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return discover(tmp_path_factory.mktemp("catalog"), config)


def test_user_payload_fuzz_delivers_conforms_or_names_every_record(
    sim: SimulatorProcess, config: dict[str, Any], catalog: dict[str, Any], tmp_path: Path
) -> None:
    users_only = select_streams(catalog, {"users"})
    fields = list(_user(0))
    examples = 0

    @FUZZ
    @given(users=mutated(_user, fields))
    def check(users: list[dict[str, Any]]) -> None:
        nonlocal examples
        users = _inflate(users)
        results = [{"user": u, "lastModified": "2026-01-01T00:00:00.000Z"} for u in users]
        sim.control("payload", {"route": "search_user", "results": results})
        run = run_inprocess(tmp_path, config, catalog=users_only)
        keyed = [u for u in users if isinstance(u.get("accountId"), str) and u["accountId"].strip()]
        usable = {u["accountId"] for u in keyed}
        got = {r["accountId"] for r in run.records("users")}
        if run.returncode == 0:
            assert got == usable, "every user with an accountId arrives"
            for user in users:
                if user.get("accountId") in got and user.get("displayName") == MEGABYTE:
                    record = next(
                        r for r in run.records("users") if r["accountId"] == user["accountId"]
                    )
                    assert record["displayName"] == MEGABYTE, "1 MB strings arrive whole"
        _check(run, "users", dropped=len(users) - len(keyed))
        examples += 1

    try:
        check()
    finally:
        sim.control("payload", {"route": "search_user", "results": None})
    FIGURES.add("payload_examples", examples)


def _without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([_audit(0) | {"author": 0}], id="author-not-an-object"),
        pytest.param([_audit(0) | {"summary": 7, "sysAdmin": "yes"}], id="wrong-scalar-types"),
        pytest.param([_audit(0), _without(_audit(1), "creationDate")], id="no-creationDate"),
        pytest.param([_audit(0) | {"creationDate": "soon"}], id="creationDate-text"),
        pytest.param([_audit(0) | {"summary": None, "newField": 1}], id="null-and-new-field"),
        pytest.param([_audit(0) | {"summary": "a\x00b", "description": MEGABYTE}], id="nul-1mb"),
    ],
)
def test_odd_audit_payloads_are_conformed_or_named(
    sim: SimulatorProcess,
    config: dict[str, Any],
    catalog: dict[str, Any],
    tmp_path: Path,
    records: list[dict[str, Any]],
) -> None:
    audit_only = select_streams(catalog, {"audit_records"})
    sim.control("payload", {"route": "audit", "results": records})
    try:
        run = run_inprocess(tmp_path, config, catalog=audit_only)
    finally:
        sim.control("payload", {"route": "audit", "results": None})
    dated = {r["creationDate"] for r in records if type(r.get("creationDate")) is int}
    if run.returncode == 0:
        assert dated <= {r.get("creationDate") for r in run.records("audit_records")}
    _check(run, "audit_records", dropped=len(records) - len(run.records("audit_records")))


def test_audit_record_without_creation_date_is_delivered_and_named(
    sim: SimulatorProcess, config: dict[str, Any], catalog: dict[str, Any], tmp_path: Path
) -> None:
    audit_only = select_streams(catalog, {"audit_records"})
    records = [_audit(0), _without(_audit(1), "creationDate")]
    sim.control("payload", {"route": "audit", "results": records})
    try:
        run = run_inprocess(tmp_path, config, catalog=audit_only)
    finally:
        sim.control("payload", {"route": "audit", "results": None})
    assert run.returncode == 0, run.stderr[-2000:]
    delivered = run.records("audit_records")
    undated = [r for r in delivered if r.get("creationDate") is None]
    assert len(undated) == 1, delivered
    assert undated[0]["createdAt"] is None
    assert undated[0]["summary"] == records[1]["summary"]
    assert any("without a creationDate" in ln for ln in run.stderr.splitlines())
