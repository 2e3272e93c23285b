"""The fault-injection run: many accounts at once, every server failing at random, the importer killed and
started again until a run finds nothing to do; then the books are balanced.

Sizes come from the environment (the defaults fit CI in about two minutes):

    CHAOS_MESSAGES   messages in all, spread over the accounts        (default 300)
    CHAOS_KILLS      SIGKILLs of the importer at random moments       (default 12)
    CHAOS_RESTARTS   Dovecot restarts in the middle of a run          (default 2)
    CHAOS_SEED       the seed of every random choice                  (default 20250304)
    CHAOS_REPORT     a file to write the figures to as JSON           (default: none)

The big run: ``CHAOS_MESSAGES=3000 CHAOS_KILLS=60 CHAOS_RESTARTS=8 .venv/bin/python -m pytest -q -s tests/chaos``.

The importer is the real command line, ``python -m ingest import --json``, in a subprocess. Its back-off is made
fast (a ``sitecustomize`` on its PYTHONPATH calls ``retry.configure_default``, as tests/conftest.py does
in-process); ``Retry-After`` is still honoured as sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

from tests.support.ca import TestCA
from tests.support.doc2_server import (
    Action,
    Delay,
    Doc2Server,
    ResetAfterStore,
    ResetBeforeAnswer,
    Respond,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
IN_FLIGHT_SECONDS = 2.0  # how long before DOC² stored an upload its sender may have sent it (and died)
CLIENT_TIMEOUT = 1.0  # doc2.timeout_seconds of the chaos accounts: a Delay beyond it is a time-out
_SITECUSTOMIZE = "from ingest import retry\nretry.configure_default(base_delay=0.005, max_delay=0.05)\n"


@dataclass(frozen=True)
class Sizes:
    messages: int
    kills: int
    restarts: int
    seed: int

    @classmethod
    def from_environ(cls) -> Sizes:
        env = os.environ
        return cls(
            messages=int(env.get("CHAOS_MESSAGES", "300")),
            kills=int(env.get("CHAOS_KILLS", "12")),
            restarts=int(env.get("CHAOS_RESTARTS", "2")),
            seed=int(env.get("CHAOS_SEED", "20250304")),
        )


# --- DOC² failing at random --------------------------------------------------------------------------------------

FAULTS: list[tuple[str, float, Callable[[random.Random], Action]]] = [
    ("500", 0.05, lambda _rng: Respond(500)),
    ("503", 0.02, lambda _rng: Respond(503)),
    ("429 Retry-After 0", 0.04, lambda _rng: Respond(429, headers={"Retry-After": "0"})),
    ("429 Retry-After 1", 0.005, lambda _rng: Respond(429, headers={"Retry-After": "1"})),
    ("time-out", 0.01, lambda _rng: Delay(CLIENT_TIMEOUT + 0.4)),
    ("reset before answer", 0.04, lambda _rng: ResetBeforeAnswer()),
    ("reset after store", 0.04, lambda _rng: ResetAfterStore()),
]


class ChaosDoc2(Doc2Server):
    """The local DOC² server, failing each upload at random (seeded) with one of :data:`FAULTS`.

    It notes which stored uploads the client cannot have seen acknowledged (stored, then reset; stored after the
    client's time-out): each explains one later upload of the same custom_doc_id.
    """

    def __init__(self, ca: TestCA, seed: int) -> None:
        super().__init__(ca)
        self._rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.unacknowledged: set[str] = set()  # doc_ids (DOC²'s) of stored uploads the client never saw answered
        self.failing = True
        self._local = threading.local()

    def _next_action(self, filename: str | None = None) -> Action | None:
        with self._lock:
            action = None
            if self.failing:
                roll = self._rng.random()
                for name, rate, make in FAULTS:
                    if roll < rate:
                        action = make(self._rng)
                        self.injected[name] += 1
                        break
                    roll -= rate
        self._local.action = action
        return action

    def _record(self, attempt: Any, upload: Any = None) -> None:
        super()._record(attempt, upload)
        action = getattr(self._local, "action", None)
        if upload is not None and isinstance(action, (Delay, ResetAfterStore)):
            with self._lock:
                self.unacknowledged.add(upload.doc_id)


# --- mail ----------------------------------------------------------------------------------------------------------


@dataclass
class Mail:
    account: str
    number: int
    message_id: str
    documents: list[tuple[str, bytes]]  # the readable documents it carries
    damaged: bool = False
    raw: bytes = b""
    uid: int = 0  # IMAP UID in INBOX after delivery (POP3 accounts: the UIDL derives from it)

    @property
    def expect(self) -> str:
        return "failed" if self.damaged else "processed"


def make_mail(rng: random.Random, account: str, number: int) -> Mail:
    from tests.mail import pdf_bytes

    message_id = f"chaos-{account}-{number}@supplier.example"
    count = rng.choices([0, 1, 2, 3], weights=[5, 55, 30, 10])[0]
    documents = []
    for index in range(count):
        token = f"{account} {number} {index} {rng.getrandbits(64):x}"
        if rng.random() < 0.2:
            documents.append((f"invoice-{number}-{index}.xml", f"<Invoice><ID>{token}</ID></Invoice>\n".encode()))
        else:
            documents.append((f"invoice-{number}-{index}.pdf", pdf_bytes(token)))
    damaged = count > 0 and rng.random() < 0.03
    message = EmailMessage()
    message["From"] = "Supplier <billing@supplier.example>"
    message["To"] = "invoices@contoso.example"
    message["Subject"] = f"Invoice {account} {number}"
    message["Date"] = "Tue, 04 Mar 2025 09:15:00 +0100"
    message["Message-ID"] = f"<{message_id}>"
    message.set_content(f"Invoice {number}.\n")
    for name, content in documents:
        subtype = "xml" if name.endswith(".xml") else "pdf"
        message.add_attachment(content, maintype="application", subtype=subtype, filename=name)
    raw = message.as_bytes(policy=SMTP)
    if damaged:  # one more part whose base64 no decoder accepts: the message belongs in the failed folder
        boundary = message.get_boundary().encode()
        broken = (
            b"--" + boundary + b'\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="x.pdf"'
            b"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xL\r\n"
        )
        raw = raw.replace(b"--" + boundary + b"--", broken + b"--" + boundary + b"--")
    return Mail(account, number, message_id, documents, damaged, raw)


# --- the importer, started and killed --------------------------------------------------------------------------------


@dataclass
class Run:
    number: int
    returncode: int | None
    killed_after: float | None
    duration: float
    report: dict[str, Any] | None
    stderr_tail: str
    dovecot_restarted: bool = False

    @property
    def idle(self) -> bool:
        """This run found nothing to do."""
        if self.returncode != 0 or self.report is None:
            return False
        totals = self.report["totals"]
        busy = (
            "messages_seen",
            "messages_deferred",
            "messages_failed",
            "documents_uploaded",
            "messages_moved_to_failed",
        )
        return all(totals.get(key, 0) == 0 for key in busy)


@dataclass
class Importer:
    env: dict[str, str]
    observe: Callable[[str, str], None]
    runs: list[Run] = field(default_factory=list)
    kill_times: list[float] = field(default_factory=list)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (time.time(), what happened)

    @classmethod
    def prepare(cls, tmp: Path, env: dict[str, str], observe: Callable[[str, str], None]) -> Importer:
        site = tmp / "fast-retries"
        site.mkdir()
        (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DOC2_", "KEY_VAULT", "CHAOS_"))}
        base["PYTHONPATH"] = os.pathsep.join([str(site), str(PROJECT_ROOT)])
        return cls({**base, **env}, observe)

    def run(self, kill_after: float | None, restart: Callable[[], None] | None, restart_after: float) -> Run:
        number = len(self.runs) + 1
        timer = threading.Timer(restart_after, restart) if restart is not None else None
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "ingest", "import", "--json"],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.timeline.append((time.time(), f"run {number} starts"))
        if timer is not None:
            timer.start()
        killed = None
        try:
            stdout, stderr = process.communicate(timeout=kill_after if kill_after is not None else 600)
        except subprocess.TimeoutExpired:
            if kill_after is None:
                process.kill()
                raise
            process.kill()  # SIGKILL: no clean-up, no goodbye to any server
            self.kill_times.append(time.time())
            self.timeline.append((time.time(), f"run {number} killed"))
            stdout, stderr = process.communicate()
            killed = kill_after
        if timer is not None:
            timer.join()
        self.timeline.append((time.time(), f"run {number} ends (exit {process.returncode})"))
        self.observe(f"chaos run {number} stdout", stdout)
        self.observe(f"chaos run {number} stderr", stderr)
        report = None
        if killed is None and stdout.strip():
            report = json.loads(stdout)
        run = Run(
            number,
            None if killed is not None else process.returncode,
            killed,
            time.monotonic() - started,
            report,
            "\n".join(stderr.splitlines()[-5:]),
            dovecot_restarted=timer is not None,
        )
        self.runs.append(run)
        return run


# --- the books -----------------------------------------------------------------------------------------------------


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass
class Books:
    """What DOC² received, checked against what was sent."""

    uploads: list[Any]
    unacknowledged: set[str]
    kill_times: list[float]

    def duplicates(self) -> tuple[int, Counter[str], list[str]]:
        """(extra uploads, why, unexplained) over every custom_doc_id uploaded more than once."""
        by_id: dict[str, list[Any]] = defaultdict(list)
        for upload in sorted(self.uploads, key=lambda u: u.received_at):
            by_id[upload.custom_doc_id].append(upload)
        why: Counter[str] = Counter()
        unexplained = []
        extra = 0
        for doc_id, uploads in by_id.items():
            extras = len(uploads) - 1
            if not extras:
                continue
            extra += extras
            # Each upload the client never saw acknowledged explains one more: the client sent it again. (After a
            # time-out the retry may even be stored before the slow original.)
            unacknowledged = min(extras, sum(u.doc_id in self.unacknowledged for u in uploads))
            why["previous upload never acknowledged (reset after store, time-out)"] += unacknowledged
            rest = extras - unacknowledged
            # A kill explains the rest when it fell between the first upload and the last, the first one counted
            # from a moment before DOC² stored it: an upload in flight is stored after its sender died.
            first, last = uploads[0].received_at - IN_FLIGHT_SECONDS, uploads[-1].received_at
            if rest and any(first <= kill <= last for kill in self.kill_times):
                why["importer killed with the upload in flight or not yet recorded"] += rest
            elif rest:
                times = ", ".join(f"{u.received_at:.3f}" for u in uploads)
                unexplained.append(
                    f"{uploads[0].metadata['mailbox']}: {doc_id} ({uploads[0].filename}) uploaded {len(uploads)} "
                    f"times without a reason, at {times}"
                )
        return extra, why, unexplained

    def ids_by_content(self) -> dict[tuple[str, str], set[str]]:
        """(mailbox, content digest) -> the custom_doc_ids it was uploaded under (must be one)."""
        result: dict[tuple[str, str], set[str]] = defaultdict(set)
        for upload in self.uploads:
            result[(upload.metadata["mailbox"], digest(upload.content))].add(upload.custom_doc_id)
        return result
