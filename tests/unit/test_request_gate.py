"""The request gate: fewer requests out at once while the API answers 429, more as it recovers."""

from __future__ import annotations

import threading
import time

from tap_confluence.http.limits import RECOVER_AFTER, RequestGate


def test_each_429_halves_the_requests_allowed_out_but_never_below_one() -> None:
    gate = RequestGate(5)
    assert gate.limit == 5
    for expected in (2, 1, 1):
        gate.refused()
        assert gate.limit == expected
    assert gate.lowest == 1


def test_a_run_of_successes_lets_one_more_request_out_up_to_the_ceiling() -> None:
    gate = RequestGate(3)
    gate.refused()
    assert gate.limit == 1
    for _ in range(RECOVER_AFTER - 1):
        gate.answered()
    assert gate.limit == 1, "not before a whole run of successes"
    gate.answered()
    assert gate.limit == 2
    gate.refused()
    for _ in range(5 * RECOVER_AFTER):
        gate.answered()
    assert gate.limit == 3, "never above the number of workers"


def test_no_more_requests_are_out_at_once_than_the_limit_allows() -> None:
    gate = RequestGate(4)
    gate.refused()  # 2 at once from now on
    out = 0
    most = 0
    lock = threading.Lock()

    def request() -> None:
        nonlocal out, most
        with gate.slot():
            with lock:
                out += 1
                most = max(most, out)
            time.sleep(0.05)
            with lock:
                out -= 1

    threads = [threading.Thread(target=request) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "every request got a slot"
    assert most == 2
