"""Whether a message passes an account's message filters (``from``, ``subject``, ``max_age_days``), and an
attachment the attachment filters (``max_attachment_mb``, ``attachment_names``, ``exclude_attachment_names``).
No network.

The ``from`` allow-list is a gate an attacker writes the input for, so it fails closed: every address of the
From header must match a pattern (``From: mallory@evil.example, billing@supplier.example`` does not pass
``*@supplier.example``), and a From header the strict RFC 5322 parser cannot read matches nothing.
``email.utils.parseaddr`` is not used for this: it returns one address of a list, or a guess for a broken one.
"""

from __future__ import annotations

import email.errors
import functools
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.headerregistry import HeaderRegistry
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from .model import MessageHeaders

if TYPE_CHECKING:
    from .config import Filters

SENDER_NOT_ALLOWED = "filtered: sender not in from"

_REGISTRY = HeaderRegistry()


def message_passes_filters(headers: MessageHeaders, filters: Filters, now: datetime) -> str | None:
    """None when the message passes the account's message filters, else the reason it does not."""
    if filters.from_ and not senders_allowed(_senders(headers), filters.from_):
        return SENDER_NOT_ALLOWED
    if filters.subject is not None and not re.search(filters.subject, headers.subject or ""):
        return "filtered: subject does not match"
    if (
        filters.max_age_days is not None
        and headers.received is not None
        and _aware(now) - _aware(headers.received) > timedelta(days=filters.max_age_days)
    ):
        return f"filtered: older than {filters.max_age_days} days"
    return None


def attachment_too_large(size: int, filters: Filters) -> str | None:
    """The reason an attachment of ``size`` bytes is refused, or None when it is within ``max_attachment_mb``."""
    limit = filters.max_attachment_bytes
    if limit is not None and size > limit:
        return f"filtered: larger than {filters.max_attachment_mb:g} MB"
    return None


def attachment_name_refused(name: str, filters: Filters) -> str | None:
    """The reason an attachment called ``name`` is refused by ``attachment_names``/``exclude_attachment_names``
    (case-insensitive globs), or None when it passes."""
    folded = name.casefold()
    if filters.attachment_names and not any(fnmatchcase(folded, p.casefold()) for p in filters.attachment_names):
        return "filtered: name not in attachment_names"
    if any(fnmatchcase(folded, p.casefold()) for p in filters.exclude_attachment_names):
        return "filtered: name in exclude_attachment_names"
    return None


def senders_allowed(addresses: Sequence[str], patterns: Sequence[str]) -> bool:
    """True when there is at least one address and every one matches a pattern (a case-insensitive glob)."""
    folded = [pattern.casefold() for pattern in patterns]
    return bool(addresses) and all(
        any(fnmatchcase(address.casefold(), pattern) for pattern in folded) for address in addresses
    )


@functools.lru_cache(maxsize=1024)
def strict_addresses(value: str) -> tuple[str, ...]:
    """Every ``local@domain`` of an address-list header (From, Sender), or () when the header is not a clean
    address list: one address the parser had to guess at makes the whole header unreadable for a filter.

    Kept for the last 1,024 header texts: the strict parser takes ~0.3 ms a header (a tenth of a mail's CPU in an
    IMAP import), every message read is asked (``MessageHeaders.from_addresses``), and a mailbox's mail comes from
    few senders. A pure function of the text, and the answer is an immutable tuple."""
    try:
        header = _REGISTRY("from", value)
    except Exception:  # noqa: BLE001 - whatever the parser trips over, the header is not readable
        return ()
    if any(isinstance(defect, email.errors.InvalidHeaderDefect) for defect in header.defects):
        return ()
    addresses = []
    for address in header.addresses:  # type: ignore[attr-defined]  # an address header has .addresses
        if not address.username or not address.domain:
            return ()
        addresses.append(f"{address.username}@{address.domain}")
    return tuple(addresses)


def _senders(headers: MessageHeaders) -> tuple[str, ...]:
    if headers.from_addresses is not None:
        return headers.from_addresses
    return strict_addresses(headers.sender)  # headers built from one known address (Graph, tests)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
