"""A message fetched whole as RFC 822 bytes (IMAP, POP3): one extraction path for both.

The bytes are in memory, or in a temporary file for a big message (see :class:`~ingest.mime.rawmail.RawMail`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING

from ..model import Blob, Extraction, MessageHeaders
from ..rules import MessageFacts
from .body import attachment_names, read_body, recipients
from .headers import message_identity, parse_headers
from .rawmail import RawMail
from .walk import extract_from_mime

if TYPE_CHECKING:
    from ..ports import ExtractionOptions


class MimeMailItem:
    def __init__(self, raw: bytes | Blob | RawMail, *, omitted_sizes: Mapping[str, int] | None = None) -> None:
        self.mail = RawMail.of(raw)
        # Parts the mailbox did not fetch (over the size limit), by position, with their size.
        self.omitted_sizes = dict(omitted_sizes or {})
        self._facts: MessageFacts | None = None

    @property
    def raw(self) -> bytes:
        """Every byte of the message in memory (tests, small messages); extraction reads ``mail`` instead."""
        return self.mail.read()

    @cached_property
    def headers(self) -> MessageHeaders:
        return parse_headers(self.mail.header_block())

    @cached_property
    def identity(self) -> str:
        return message_identity(self.headers, self.mail)

    def facts(self) -> MessageFacts:
        """What rules ask about the message; attachment names and body are parsed when first asked."""
        if self._facts is None:
            self._facts = MessageFacts(
                self.headers,
                recipients(self.mail.header_block()),
                lambda: attachment_names(self.mail),
                lambda: read_body(self.mail),
            )
        return self._facts

    def extract(self, options: ExtractionOptions) -> Extraction:
        return extract_from_mime(self.mail, options, omitted_sizes=self.omitted_sizes)

    def close(self) -> None:
        """Delete the temporary file of a big message (nothing to do for one in memory)."""
        self.mail.close()
