"""The SDK's standard tap tests (get_tap_test_class), run against the simulator over sockets.

The SDK builds the test class at import time, when no server runs yet, so the class is made
with a syntactically valid placeholder config and the class-scoped ``runner`` fixture swaps
in a live simulator's config before the one sync every test reads from.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from singer_sdk.testing import SuiteConfig, TapTestRunner, get_tap_test_class

from simulator.process import SimulatorProcess
from tap_confluence.tap import TapConfluence

GROUP_SCOPES = [
    "read:content-details:confluence",
    "read:audit-log:confluence",
    "read:configuration:confluence",
    "read:group:confluence",
    "read:user:confluence",
    "offline_access",
]
PLACEHOLDER = {
    "cloud_id": "0f0f0f0f-1111-4222-8333-444455556666",
    "client_id": "fake-client-id",
    "client_secret": "fake-client-secret",
    "refresh_token": "fake-refresh-token-seed",
    "api_url": "http://127.0.0.1:9",
    "auth_url": "http://127.0.0.1:9",
}
SUITE = SuiteConfig(max_records_limit=200)

_StandardTests = get_tap_test_class(
    TapConfluence, config=PLACEHOLDER, suite_config=SUITE, parse_env_config=False
)


@pytest.fixture(scope="module")
def standard_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path_factory.mktemp("sim-core"), users=60, guests=8, groups=6)
    yield sim
    sim.stop()


class TestTapConfluence(_StandardTests):  # type: ignore[misc,valid-type]
    """Standard SDK tests with a token granted every scope, so every stream has records."""

    @pytest.fixture(scope="class")
    @classmethod
    def runner(cls, standard_simulator: SimulatorProcess) -> TapTestRunner:
        granted = standard_simulator.control("grant", {"scopes": GROUP_SCOPES, "admin": True})
        config = standard_simulator.tap_config("oauth", refresh_token=granted["refresh_token"])
        test_runner = TapTestRunner(
            tap_class=TapConfluence, config=config, suite_config=SUITE, parse_env_config=False
        )
        test_runner.sync_all()
        return test_runner
