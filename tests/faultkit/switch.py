"""The fault switch: `EVENTCRM_TEST_FAULTS=off` makes every fault helper a no-op.

It exists for the mutation check of the fault suite (docs/faults.md): with the faults
switched off, each fault test must fail — on its own proof that the fault landed and
mattered — or report that no fault landed. A test never reads it except through
`Faults`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

SWITCH = "EVENTCRM_TEST_FAULTS"


def faults_enabled() -> bool:
    return os.environ.get(SWITCH, "on").strip().lower() not in {"off", "0", "no", "false"}


@dataclass
class Faults:
    """Injects faults (unless switched off) and counts the ones that landed."""

    enabled: bool = field(default_factory=faults_enabled)
    landed: Counter[str] = field(default_factory=Counter)
    recoveries: list[float] = field(default_factory=list)
    """Seconds from each fault to the pipeline's next progress (fault-long's summary)."""

    def inject(self, kind: str, action: Callable[[], object]) -> bool:
        """Run ``action`` as fault ``kind``; False (and nothing done) when switched off."""
        if not self.enabled:
            return False
        action()
        self.landed[kind] += 1
        return True

    def assert_landed(self, kind: str, times: int = 1) -> None:
        assert self.landed[kind] >= times, (
            f"no {kind!r} fault landed ({self.landed[kind]} of {times}); "
            f"{SWITCH}={os.environ.get(SWITCH, 'on')}"
        )

    def timed_recovery(self, progressed: Callable[[], bool], *, timeout: float) -> float:
        """Wait for ``progressed`` after a fault; record and return how long it took."""
        started = time.monotonic()
        while not progressed():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"no progress within {timeout:.0f}s of a fault")
            time.sleep(0.05)
        took = time.monotonic() - started
        self.recoveries.append(took)
        return took
