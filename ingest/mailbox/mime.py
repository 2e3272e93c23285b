"""A message fetched whole as RFC 822 bytes (IMAP, POP3): one extraction path for both."""

from __future__ import annotations

from functools import cached_property

from ..extraction import extract_from_mime, message_identity, parse_headers
from ..model import Extraction, MessageHeaders
from .base import ExtractionOptions


class MimeMailItem:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    @cached_property
    def headers(self) -> MessageHeaders:
        return parse_headers(self.raw)

    @cached_property
    def identity(self) -> str:
        return message_identity(self.headers, self.raw)

    def extract(self, options: ExtractionOptions) -> Extraction:
        return extract_from_mime(self.raw, options)
