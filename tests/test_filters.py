"""The message filters (ingest.filters): from, subject, max_age_days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.config import Filters
from ingest.filters import message_passes_filters, strict_addresses
from ingest.mime.headers import parse_headers
from ingest.model import MessageHeaders

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
SUPPLIER_ONLY = Filters.model_validate({"from": ["*@supplier.example", "boss@contoso.example"]})


def _headers(
    sender: str = "billing@supplier.example", subject: str = "Rechnung 42", received: datetime | None = NOW
) -> MessageHeaders:
    return MessageHeaders(message_id="m@x", sender=sender, subject=subject, received=received)


def _from_header(value: bytes) -> MessageHeaders:
    return parse_headers(b"From: " + value + b"\r\nSubject: Rechnung\r\nMessage-ID: <m@x>\r\n\r\n")


def test_no_filters_pass_everything() -> None:
    assert message_passes_filters(_headers(), Filters(), NOW) is None


@pytest.mark.parametrize(
    ("sender", "passes"),
    [
        ("billing@supplier.example", True),
        ("BILLING@Supplier.EXAMPLE", True),
        ("Buchhaltung <billing@supplier.example>", True),
        ("billing@supplier.example.evil.com", False),
        ("someone@other.example", False),
        ("", False),
    ],
)
def test_from_is_a_case_insensitive_glob_on_the_bare_address(sender: str, passes: bool) -> None:
    expected = None if passes else "filtered: sender not in from"
    assert message_passes_filters(_headers(sender=sender), SUPPLIER_ONLY, NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        # Two addresses, one outside the allow-list, in either order (parseaddr saw only the first one).
        b"mallory@evil.example, billing@supplier.example",
        b"billing@supplier.example, mallory@evil.example",
        b"Billing <billing@supplier.example>, Mallory <mallory@evil.example>",
        # The allowed address as the display name of another one.
        b"billing@supplier.example <mallory@evil.example>",
        b'"billing@supplier.example" <mallory@evil.example>',
        # Not an address list at all: parseaddr gave nothing, the raw text matched the glob.
        b"mallory@evil.example billing@supplier.example",
        b"billing@supplier.example@evil.example",
        b"garbage",
        b"undisclosed-recipients:;",
    ],
)
def test_from_must_hold_only_allowed_addresses_strictly_parsed(value: bytes) -> None:
    assert message_passes_filters(_from_header(value), SUPPLIER_ONLY, NOW) == "filtered: sender not in from"


@pytest.mark.parametrize(
    "value",
    [
        b"billing@supplier.example",
        b"Buchhaltung <billing@supplier.example>",
        b"=?utf-8?q?M=C3=BCller=2C_Hans?= <h@supplier.example>",
        b"John Q. Public <jq@supplier.example>",
        b"billing@supplier.example (Rechnungswesen)",
        b"billing@supplier.example, Chef <boss@contoso.example>",
        b"=?iso-8859-1?q?Gr=FC=DFe?=\r\n <billing@supplier.example>",
    ],
)
def test_from_with_only_allowed_addresses_passes(value: bytes) -> None:
    assert message_passes_filters(_from_header(value), SUPPLIER_ONLY, NOW) is None


def test_two_from_headers_do_not_pass() -> None:
    raw = b"From: billing@supplier.example\r\nFrom: mallory@evil.example\r\nSubject: x\r\n\r\n"
    assert message_passes_filters(parse_headers(raw), SUPPLIER_ONLY, NOW) == "filtered: sender not in from"


def test_sender_decides_only_without_from() -> None:
    raw = b"Sender: billing@supplier.example\r\nSubject: x\r\n\r\n"
    assert message_passes_filters(parse_headers(raw), SUPPLIER_ONLY, NOW) is None
    raw = b"From: mallory@evil.example\r\nSender: billing@supplier.example\r\nSubject: x\r\n\r\n"
    assert message_passes_filters(parse_headers(raw), SUPPLIER_ONLY, NOW) is not None


def test_strict_addresses() -> None:
    assert strict_addresses("A <a@x.example>, b@y.example") == ("a@x.example", "b@y.example")
    assert strict_addresses("a@x.example b@y.example") == ()
    assert strict_addresses("") == ()


def test_subject_is_a_regular_expression_searched_in_the_subject() -> None:
    filters = Filters(subject="(?i)invoice|rechnung")
    assert message_passes_filters(_headers(subject="Ihre RECHNUNG 42"), filters, NOW) is None
    assert message_passes_filters(_headers(subject="Fwd: invoice"), filters, NOW) is None
    assert message_passes_filters(_headers(subject="Newsletter"), filters, NOW) == "filtered: subject does not match"
    assert message_passes_filters(_headers(subject="rechnung"), Filters(subject="^Rechnung"), NOW) is not None


def test_max_age_days() -> None:
    filters = Filters(max_age_days=30)
    assert message_passes_filters(_headers(received=NOW - timedelta(days=29)), filters, NOW) is None
    assert message_passes_filters(_headers(received=NOW - timedelta(days=31)), filters, NOW) == (
        "filtered: older than 30 days"
    )
    assert message_passes_filters(_headers(received=None), filters, NOW) is None
    # naive datetimes are read as UTC rather than raising
    naive = datetime(2025, 1, 1)
    assert message_passes_filters(_headers(received=naive), filters, NOW.replace(tzinfo=None)) is not None
