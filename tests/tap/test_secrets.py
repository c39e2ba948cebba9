"""No secret reaches stdout (records, state), stderr (logs, errors), in any mode or failure."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tests.support.tap_cli import TapRun, run_tap

SMALL = {"users": 12, "guests": 2, "groups": 3, "audit_records": 150}


def _secrets(sim: SimulatorProcess) -> set[str]:
    c = sim.creds
    values = {
        c.client_secret,
        c.seed_refresh_token,
        c.classic_token,
        c.scoped_token,
        # A Basic header carries base64(email:token); that must not leak either.
        base64.b64encode(f"{c.email}:{c.classic_token}".encode()).decode(),
        base64.b64encode(f"{c.email}:{c.scoped_token}".encode()).decode(),
    }
    tokens = sim.control("tokens")
    values |= {t["token"] for t in tokens["access_tokens"]}
    values |= {t["token"] for t in tokens["refresh_tokens"]}
    return values


@pytest.mark.slow
def test_no_secret_appears_in_any_output_across_modes_and_failures(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    sim.control("config", {"reuse_leeway": 0})
    outputs: list[str] = []

    def run(config: dict[str, Any], **kwargs: Any) -> TapRun:
        result = run_tap(tmp_path, config, env={"LOGLEVEL": "DEBUG"}, **kwargs)
        outputs.extend([result.stdout, result.stderr])
        if result.messages:
            outputs.append(json.dumps(result.states()))
        return result

    oauth = sim.tap_config("oauth")
    first = run(oauth)
    assert first.returncode == 0, first.stderr[-2000:]
    # Force the 401 -> refresh -> retry path, and a rate-limited token endpoint.
    sim.control("expire-access-tokens", {})
    sim.control("faults", {"rate_limit_every": 3, "retry_after": "0"})
    assert run(oauth, state=first.final_state()).returncode == 0
    sim.control("faults", {})
    # oauth_plus_token shares the OAuth store: the seed token was spent by the first run.
    for mode in ("scoped_token", "classic_token", "oauth_plus_token"):
        assert run(sim.tap_config(mode)).returncode == 0
    # Failures: bad API tokens, a client secret the auth server rejects, and last (it
    # revokes the family) the already-rotated seed token, whose refusal text is echoed.
    assert run(sim.tap_config("classic_token", api_token="fake-wrong-api-token-9")).returncode == 1
    sim.control("expire-access-tokens", {})
    bad_secret = sim.tap_config("oauth", client_secret="fake-wrong-client-secret")
    assert run(bad_secret).returncode == 1
    run(oauth, extra=("--discover",))
    reused = sim.tap_config("oauth", token_store_path=str(tmp_path / "x.json"))
    refused = run(reused)
    assert refused.returncode == 1
    assert "Atlassian refused the configured refresh_token" in refused.stderr

    secrets = _secrets(sim) | {"fake-wrong-api-token-9", "fake-wrong-client-secret"}
    assert len(secrets) > 8, "the scan must cover the tokens the simulator issued"
    everything = "\n".join(outputs)
    assert "RECORD" in everything  # the scan covers real output
    leaked = sorted(s for s in secrets if s in everything)
    assert not leaked, f"{len(leaked)} secret(s) leaked"
