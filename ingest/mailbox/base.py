"""What the pipeline asks of a mailbox, whatever its protocol: declared in ingest.ports (the core's side), named
here too for the adapters; and what some mailboxes can do besides."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..ports import ExtractionOptions, Mailbox, MailItem, Outcome

__all__ = ["ExtractionOptions", "MailItem", "Mailbox", "Outcome", "RestoresFailedMail"]


@runtime_checkable
class RestoresFailedMail(Protocol):
    """A mailbox with a failed folder (IMAP, Graph): ``retry`` moves failed mail back to the source folder."""

    def restore(self, key: str, identity: str | None) -> bool:
        """Move the message recorded under ``key`` (with ``identity``) from the failed folder back to the source
        folder. False when the mailbox does not have it there any more."""
        ...
