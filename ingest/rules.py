"""Routing rules: which rule of an account a message matches, and what that rule decides for it.

The first rule whose ``match`` holds wins; every condition given must hold; no match leaves the account's own
settings. Conditions are checked cheapest first (addresses and subject from the headers, then attachment names,
then the body), and the costly facts are only read when a rule asks for them: a Graph message's body is downloaded
only for a rule with a ``body`` condition that got that far.

``from`` is a gate a sender writes the input for, so it fails closed as the account's ``from`` filter does: every
address of From must match a pattern, and a From the strict parser cannot read matches nothing. ``to`` holds when
some address of To or Cc matches a pattern.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from .config import Rule
from .filters import senders_allowed, strict_addresses
from .mime.body import MailBody
from .model import MessageHeaders


class MessageFacts:
    """What rules can ask about a message. The attachment names and the body are read once, when first asked."""

    def __init__(
        self,
        headers: MessageHeaders,
        recipients: Sequence[str],
        attachment_names: Callable[[], Sequence[str]],
        body: Callable[[], MailBody],
    ) -> None:
        self.headers = headers
        self.recipients = tuple(recipients)
        self._attachment_names = attachment_names
        self._body = body

    @functools.cached_property
    def senders(self) -> tuple[str, ...]:
        """Every address of From; a mailbox that knows only one sender address (Graph) gives that one."""
        if self.headers.from_addresses is not None:
            return self.headers.from_addresses
        return strict_addresses(self.headers.sender)

    @functools.cached_property
    def attachment_names(self) -> tuple[str, ...]:
        return tuple(self._attachment_names())

    @functools.cached_property
    def body(self) -> MailBody:
        return self._body()

    @functools.cached_property
    def body_text(self) -> str:
        return self.body.plain_text()


@dataclass(frozen=True)
class Decision:
    """What happens to one message: its DOC² source, the metadata added to its uploads, or nothing (skip)."""

    rule: str | None  # the name of the rule that matched; None: the account's settings
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    skip: bool = False


def decide(rules: Sequence[Rule], default_source: str, facts: MessageFacts) -> Decision:
    """The first rule whose conditions all hold decides; no match: the account's own settings."""
    for rule in rules:
        if matches(rule, facts):
            then = rule.then
            metadata: dict[str, Any] = dict(then.metadata)
            if then.document_type is not None:
                metadata["document_type"] = then.document_type
            return Decision(rule.name, then.doc2_source or default_source, metadata, then.skip)
    return Decision(None, default_source)


def matches(rule: Rule, facts: MessageFacts) -> bool:
    match = rule.match
    if match.from_ and not senders_allowed(facts.senders, match.from_):
        return False
    if match.to and not _any_matches(facts.recipients, match.to):
        return False
    if match.subject is not None and not re.search(match.subject, facts.headers.subject or ""):
        return False
    if match.attachment_names and not _any_matches(facts.attachment_names, match.attachment_names):
        return False
    return match.body is None or re.search(match.body, facts.body_text) is not None


def _any_matches(values: Sequence[str], patterns: Sequence[str]) -> bool:
    folded = [pattern.casefold() for pattern in patterns]
    return any(fnmatchcase(value.casefold(), pattern) for value in values for pattern in folded)
