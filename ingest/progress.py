"""Progress of an import as it goes, for a person watching: which account, how many messages, which one now.

The pipeline calls a :class:`Progress`; the command line hands it a :class:`StderrProgress` (standard error, so
``--json`` keeps standard output clean), ``--quiet`` and the Function App the silent base class. A message is
shown by sender, subject and date, never by a bare UID: that is what a person recognises in the mailbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from .model import MessageHeaders

SUBJECT_CHARS = 60


def describe_message(headers: MessageHeaders | None) -> str:
    """``sender | "subject" | date`` of a message, as far as the headers tell."""
    if headers is None:
        return "(headers not read yet)"
    subject = headers.subject or "(no subject)"
    if len(subject) > SUBJECT_CHARS:
        subject = subject[: SUBJECT_CHARS - 1] + "…"
    return f'{headers.sender or "(no sender)"} | "{subject}" | {format_date(headers.received)}'


def format_date(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "(no date)"


@dataclass
class Progress:
    """Silent progress: remembers where the run is (for an interruption's message) and prints nothing."""

    finished: list[str] = field(default_factory=list)  # accounts whose run ended
    current: str | None = None
    position: int = 0
    total: int = 0

    def account_started(self, account: str, kind: str, total: int) -> None:
        self.current, self.position, self.total = account, 0, total

    def message(self, position: int, headers: MessageHeaders | None, note: str = "") -> None:
        self.position = position

    def account_finished(self, account: str, outcome: str) -> None:
        self.finished.append(account)
        self.current = None

    def interrupted(self) -> str:
        """One line for a run stopped by the user: what finished, and that a re-run takes the rest."""
        done = f"accounts finished: {', '.join(self.finished)}" if self.finished else "no account finished"
        now = (
            f"; account {self.current} was at message {self.position} of {self.total}"
            if self.current is not None
            else ""
        )
        return (
            f"interrupted: {done}{now}. Nothing is lost or half-done: documents already in DOC² are recorded, "
            "unfinished mail stays in its folder; run import again to take the rest."
        )


@dataclass
class StderrProgress(Progress):
    """Prints each step on a stream (standard error) as it happens."""

    stream: TextIO | None = None

    def _say(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

    def account_started(self, account: str, kind: str, total: int) -> None:
        super().account_started(account, kind, total)
        self._say(f"account {account} ({kind}): {total} message{'s' if total != 1 else ''} to look at")

    def message(self, position: int, headers: MessageHeaders | None, note: str = "") -> None:
        super().message(position, headers, note)
        self._say(f"  {position}/{self.total} {describe_message(headers)}{f' ({note})' if note else ''}")

    def account_finished(self, account: str, outcome: str) -> None:
        super().account_finished(account, outcome)
        self._say(f"account {account}: {outcome}")
