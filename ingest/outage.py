"""Whose fault a DOC² failure is (PRODUCT.md, "Whose fault a failure is"): the message's, or DOC²'s.

An upload that still fails after every retry (unreachable, time-outs, 429/5xx: ``Doc2Unavailable``) says nothing
by itself about whose fault it is. DOC² being down is nobody's message's fault: no attempt may be counted, or good
mail would reach the failed folder after a long outage. A document DOC² keeps failing while it accepts others is
the message's fault: its attempt counts, or it would be tried for ever.

So such a message is first a *suspect*: left where it is, nothing counted, and the run goes on, one message at a
time. The evidence decides:

- DOC² accepts an upload that started after the suspect's upload gave up: DOC² is up, the suspect's document is the
  problem. Its attempt is counted now (after ``max_attempts`` it goes to the failed folder with the reason).
- The first suspect of a streak: DOC² is asked a cheap status request (``probe``). No answer (unreachable, 5xx,
  429): an outage, the account stops at once, having cost one message's retries.
- The account's run ends with suspects and no upload accepted after them, and every one of them was proven to fail
  by its own fault in an earlier run (nothing else of the account to upload, DOC² answers its status request):
  counted again, so that a lone document DOC² keeps failing still reaches the failed folder.
- ``OUTAGE_SUSPECTS`` suspects in a row, or the account's run ends with any other suspect and no upload accepted
  after it: an outage. The account stops for this run and is reported failed, naming DOC²; nothing is counted
  against any suspect, the mail stays in place and is imported once DOC² is back, however many runs that takes.

``Doc2Health`` numbers the uploads of the whole run as they start and keeps the newest number DOC² accepted (the
upload threads report to it), so "accepted after" is about cause, not about which answer happened to come first;
``Doc2Verdicts`` holds one account run's suspects. Once an account's run ended in an outage and DOC² accepted
nothing since, each following account of the run first asks the status request: no answer fails that account at
once, naming DOC², without reading its mail (``Doc2Health.still_down``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Doc2Unavailable
from .model import MessageRef

log = logging.getLogger(__name__)

# Suspects in a row (no upload accepted in between) that make an outage even when DOC² answers its status request:
# enough that a few documents DOC² keeps failing do not stop their account, few enough not to hammer a DOC² whose
# upload service alone is down.
OUTAGE_SUSPECTS = 5


KEEPS_FAILING = "DOC² keeps failing this message's document while accepting others"


class Doc2Health:
    """The uploads of this run, numbered as they start, and the newest one DOC² accepted (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = 0
        self._newest_accepted = 0
        self._outage_at: int | None = None  # the latest upload's number when an outage was declared

    def start(self) -> int:
        """An upload starts: its number."""
        with self._lock:
            self._started += 1
            return self._started

    def now(self) -> int:
        """The number of the latest upload started."""
        with self._lock:
            return self._started

    def record_accepted(self, number: int) -> None:
        with self._lock:
            self._newest_accepted = max(self._newest_accepted, number)

    def declare_outage(self) -> None:
        with self._lock:
            self._outage_at = self._started

    def still_down(self) -> bool:
        """True when an outage was declared in this run and DOC² accepted no upload started since."""
        with self._lock:
            return self._outage_at is not None and self._newest_accepted <= self._outage_at

    def accepted_after(self, number: int) -> bool:
        """True when DOC² accepted an upload that started after upload ``number``."""
        with self._lock:
            return self._newest_accepted > number


@dataclass
class Suspect:
    """A message whose upload DOC² failed, not (yet) counted against it."""

    ref: MessageRef
    identity: str | None
    where: str
    error: Doc2Unavailable
    gave_up_at: int  # Doc2Health.now() when its upload gave up

    def reason(self) -> str:
        return f"{KEEPS_FAILING} ({self.error})"


class Doc2Verdicts:
    """One account run's suspects, and the decision whether DOC² is down."""

    def __init__(self, health: Doc2Health, probe: Callable[[], str | None]) -> None:
        self._health = health
        self._probe = probe
        self._suspects: list[Suspect] = []

    @property
    def suspicious(self) -> bool:
        """True while some message waits for a verdict: the run reads one message at a time meanwhile."""
        return bool(self._suspects)

    @property
    def waiting(self) -> int:
        """The messages waiting for a verdict (left where they are, nothing counted against them)."""
        return len(self._suspects)

    def suspect(self, suspect: Suspect) -> None:
        """Take in a message whose upload DOC² failed. Raises Doc2Unavailable when that makes an outage."""
        self._suspects.append(suspect)
        undecided = [s for s in self._suspects if not self._health.accepted_after(s.gave_up_at)]
        if not undecided:
            return  # DOC² accepted an upload since: the caller counts it (cleared)
        if len(undecided) == 1:
            problem = self._probe()
            if problem is not None:
                raise self.outage(f"{suspect.error}; a status request: {problem}")
            log.info("%s: DOC² failed its upload but answers; the next message tells whose fault", suspect.where)
        if len(undecided) >= OUTAGE_SUSPECTS:
            raise self.outage(str(suspect.error))

    def cleared(self) -> list[Suspect]:
        """The suspects DOC² accepted an upload after: their failure is their own, to be counted now."""
        decided = [s for s in self._suspects if self._health.accepted_after(s.gave_up_at)]
        self._suspects = [s for s in self._suspects if s not in decided]
        return decided

    def at_end(self, proven_before: Callable[[Suspect], bool]) -> tuple[list[Suspect], Doc2Unavailable | None]:
        """At the end of the account's run: the suspects to count now, and the outage the others make (if any).

        ``proven_before`` tells a suspect whose failure was proven its own in an earlier run."""
        if not self._suspects:
            return [], None
        if all(proven_before(s) for s in self._suspects) and self._probe() is None:
            counted, self._suspects = self._suspects, []
            return counted, None
        return [], self.outage(str(self._suspects[-1].error))

    def outage(self, detail: str) -> Doc2Unavailable:
        self._health.declare_outage()
        waiting = len(self._suspects)
        return Doc2Unavailable(
            f"DOC² unavailable: {detail}. No attempt is counted against any message ({waiting} left waiting); the "
            f"mail stays where it is and is imported once DOC² is back"
        )
