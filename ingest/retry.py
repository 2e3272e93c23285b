"""Back-off for transient failures, shared by every HTTP client of ours."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime

DEFAULT_ATTEMPTS = 5
DEFAULT_BASE_DELAY = 1.0
DEFAULT_MAX_DELAY = 60.0
MAX_RETRY_AFTER = 300.0


@dataclass
class RetryPolicy:
    attempts: int = DEFAULT_ATTEMPTS
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based); Retry-After wins when given."""
        if retry_after is not None and math.isfinite(retry_after):
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        if retry_after is not None and retry_after > 0:  # +inf: as long as we ever wait
            return MAX_RETRY_AFTER
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not cryptography


_default = RetryPolicy()


def default_policy() -> RetryPolicy:
    return _default


def configure_default(**changes: object) -> None:
    """Change the process-wide default policy (tests make retries fast with one call)."""
    for name, value in changes.items():
        setattr(_default, name, value)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), never negative; None when absent
    or not understood (``nan``, garbage): the caller's own back-off applies then."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if not math.isnan(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: RFC 9110 dates are UTC
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def bounded_wait(pause: float, deadline: float | None) -> float | None:
    """``pause``, or None when waiting that long would end after ``deadline`` (a ``time.monotonic()`` value): the
    caller gives up instead of starting a wait the run's time budget cannot afford."""
    if deadline is not None and time.monotonic() + pause > deadline:
        return None
    return pause
