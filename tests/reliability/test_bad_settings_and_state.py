"""Invalid settings and state: one clear message before any request, never a traceback."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simulator.process import SimulatorProcess
from tests.reliability.harness import (
    FIGURES,
    Run,
    discover,
    run_inprocess,
    select_streams,
    write_inputs,
)

MODES = ("oauth", "scoped_token", "classic_token", "oauth_plus_token")
URL_KEYS = ("api_url", "auth_url", "site_url")
STRING_KEYS = ("cloud_id", "client_id", "client_secret", "refresh_token", "email", "api_token")
INT_KEYS = ("audit_lookback_minutes", "max_retry_wait_seconds")
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

wrong_types = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.none(),
    st.just(""),
)
bad_urls = st.one_of(
    st.sampled_from(
        [
            "not a url",
            "ftp://127.0.0.1/x",
            "https://",
            "http://",
            "http://example.com",
            "http://10.0.0.1:8080",
            "http://acme.atlassian.net",
            "https://127.0.0.1:1/x?y=1",
            "//127.0.0.1",
            "127.0.0.1:80",
        ]
    ),
    st.text(max_size=30),
)
now = dt.datetime.now(dt.UTC)
bad_dates = st.one_of(
    st.datetimes(min_value=dt.datetime(2100, 1, 1), max_value=dt.datetime(9999, 1, 1)).map(
        lambda d: d.isoformat() + "Z"
    ),
    st.just((now + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.sampled_from(["yesterday", "2025-13-01", "2025-02-30T00:00:00Z", "31/01/2025", "0"]),
    st.text(max_size=20),
)


@st.composite
def broken_configs(draw: st.DrawFn, base: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A valid config for some mode with one to three things made wrong."""
    config = dict(base[draw(st.sampled_from(MODES))])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "type", "url", "date", "number"]))
        if kind == "drop":
            present = sorted(k for k in config if k in STRING_KEYS)
            if present:
                config.pop(draw(st.sampled_from(present)))
        elif kind == "type":
            config[draw(st.sampled_from(STRING_KEYS + URL_KEYS))] = draw(wrong_types)
        elif kind == "url":
            config[draw(st.sampled_from(URL_KEYS))] = draw(bad_urls)
        elif kind == "date":
            config["start_date"] = draw(bad_dates)
        else:
            config[draw(st.sampled_from(INT_KEYS))] = draw(
                st.one_of(st.integers(max_value=-1), st.text(max_size=5), st.booleans())
            )
    return config


def _only_loopback(config: dict[str, Any]) -> bool:
    """True unless some URL would be a working https address off this machine."""
    for key in URL_KEYS:
        value = config.get(key)
        if isinstance(value, str) and value.strip().lower().startswith("https://"):
            host = value.strip()[8:].split("/")[0].split(":")[0]
            if host and host not in {"127.0.0.1", "localhost"}:
                return False
    return True


@pytest.fixture(scope="module")
def sim(module_sims: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    return module_sims(users=3, guests=1, groups=2, audit_records=10)


@pytest.fixture(scope="module")
def bases(
    sim: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    store = tmp_path_factory.mktemp("store-fuzz")
    return {m: sim.tap_config(m, token_store_path=str(store / "tokens.json")) for m in MODES}


@pytest.fixture(scope="module")
def catalog(
    sim: SimulatorProcess,
    bases: dict[str, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("catalog")
    return select_streams(discover(root, bases["classic_token"]), {"license_subscriptions"})


def _assert_one_clear_message(run: Run) -> str:
    line = run.assert_clean_failure()
    assert len(line) < 600, "one sentence, not a dump"
    return line


def test_settings_fuzz_fails_before_any_request_with_one_message(
    sim: SimulatorProcess, bases: dict[str, dict[str, Any]], catalog: dict[str, Any], tmp_path: Path
) -> None:
    outcomes = {"rejected": 0, "accepted": 0}

    @FUZZ
    @given(config=broken_configs(bases))
    def check(config: dict[str, Any]) -> None:
        assume(_only_loopback(config))
        before = sim.stats()["total_requests"]
        run = run_inprocess(tmp_path, config, catalog=catalog)
        if run.returncode == 0 and run.crashed is None:
            # Some mutations leave a config that is still valid: then it must simply work.
            assert len(run.records("license_subscriptions")) == 1
            outcomes["accepted"] += 1
            return
        _assert_one_clear_message(run)
        assert sim.stats()["total_requests"] == before, "refused before any request"
        outcomes["rejected"] += 1

    check()
    assert outcomes["rejected"] > outcomes["accepted"]
    FIGURES.add("settings_examples", sum(outcomes.values()))


@pytest.mark.parametrize(
    "case",
    [
        ("site_url", "http://acme.atlassian.net", "plain http"),
        ("api_url", "api.atlassian.com", "not a URL"),
        ("start_date", "2999-01-01T00:00:00Z", "in the future"),
        ("start_date", "31/01/2025", "start_date"),
        ("audit_lookback_minutes", -5, "audit_lookback_minutes"),
        ("cloud_id", 12345, "cloud_id"),
    ],
)
def test_each_bad_setting_is_named_in_its_message(
    sim: SimulatorProcess,
    bases: dict[str, dict[str, Any]],
    catalog: dict[str, Any],
    tmp_path: Path,
    case: tuple[str, object, str],
) -> None:
    key, value, named = case
    config = {**bases["oauth"], key: value}
    run = run_inprocess(tmp_path, config, catalog=catalog)
    assert named in "\n".join(run.error_lines()), run.stderr[-2000:]
    _assert_one_clear_message(run)


def test_missing_groups_of_settings_are_named(
    sim: SimulatorProcess, bases: dict[str, dict[str, Any]], catalog: dict[str, Any], tmp_path: Path
) -> None:
    oauth = dict(bases["oauth"])
    oauth.pop("client_secret")
    run = run_inprocess(tmp_path, oauth, catalog=catalog)
    assert "client_secret" in _assert_one_clear_message(run)
    bare = {k: v for k, v in bases["oauth"].items() if k in URL_KEYS}
    run = run_inprocess(tmp_path, bare, catalog=catalog)
    assert "No credentials" in _assert_one_clear_message(run)


state_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
bookmark_values = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.none(),
    st.sampled_from(["2026-02-30T00:00:00Z", "9999-12-31T23:59:59Z", "garbage", "0"]),
)


@st.composite
def broken_states(draw: st.DrawFn) -> str:
    """State file text: not JSON, JSON of the wrong shape, or bookmarks of the wrong type."""
    kind = draw(st.sampled_from(["text", "shape", "bookmark"]))
    if kind == "text":
        return draw(st.sampled_from(["", "{", "not json", "{'a': 1}", "\x00\x01", "[1,"]))
    if kind == "shape":
        return json.dumps(draw(state_values))
    bookmark = {"replication_key": "createdAt", "replication_key_value": draw(bookmark_values)}
    return json.dumps({"bookmarks": {"audit_records": bookmark}})


def test_state_fuzz_gets_one_message_or_is_conformed(
    sim: SimulatorProcess, bases: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    config = bases["classic_token"]
    catalog = select_streams(discover(tmp_path, config), {"audit_records"})
    outcomes = {"rejected": 0, "accepted": 0}

    @FUZZ
    @given(text=broken_states())
    def check(text: str) -> None:
        args = write_inputs(tmp_path, config, None, catalog)
        state_path = Path(tmp_path / "inputs" / "state-fuzz.json")
        state_path.write_text(text)
        run = run_inprocess(tmp_path, config, args=[*args, "--state", str(state_path)])
        if run.returncode == 0 and run.crashed is None:
            assert len(run.records("audit_records")) > 0
            outcomes["accepted"] += 1
            return
        line = _assert_one_clear_message(run)
        assert "state" in line.lower()
        outcomes["rejected"] += 1

    check()
    FIGURES.add("state_examples", sum(outcomes.values()))
