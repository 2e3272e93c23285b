"""The shared back-off: what a Retry-After header may say, and how long that makes us wait."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from ingest.retry import MAX_RETRY_AFTER, RetryPolicy, bounded_wait, parse_retry_after


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-5", 0.0),  # never negative
        ("nan", None),  # not a number: our own back-off applies
        ("soon", None),
        ("", None),
        (None, None),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),  # a date in the past: go now
    ],
)
def test_retry_after_values(header, seconds):
    assert parse_retry_after(header) == seconds


def test_retry_after_dates_in_the_future_are_seconds_from_now():
    in_a_minute = parse_retry_after(formatdate(time.time() + 60, usegmt=True))
    assert in_a_minute is not None and 55 <= in_a_minute <= 60


def test_huge_and_infinite_retry_after_are_capped():
    policy = RetryPolicy(base_delay=1.0, max_delay=60.0)
    assert policy.delay(1, parse_retry_after("1e400")) == MAX_RETRY_AFTER
    assert policy.delay(1, parse_retry_after("100000")) == MAX_RETRY_AFTER
    assert 0.5 <= policy.delay(1, parse_retry_after("nan")) <= 1.0  # the back-off of the first retry


def test_no_wait_is_started_that_the_deadline_cannot_afford():
    assert bounded_wait(5.0, None) == 5.0
    assert bounded_wait(5.0, time.monotonic() + 60) == 5.0
    assert bounded_wait(5.0, time.monotonic() + 1) is None
