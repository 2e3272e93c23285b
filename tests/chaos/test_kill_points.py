"""The nastiest moment to die, hit on purpose rather than by chance: the importer is SIGKILLed after DOC² stored an
upload and before the answer reached it (so before the state store could record it)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

from ingest.attempts import MARK
from tests.mail import invoice_mail
from tests.security.secret_scan import observe
from tests.support.scenario import PROJECT_ROOT


def _start_cli(scenario) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DOC2_", "KEY_VAULT"))}
    env.update(scenario.environ())
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", "import", "--json"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_after_doc2_stored_the_upload_repeats_it_once_with_the_same_custom_doc_id(scenario, monkeypatch):
    scenario.append_many([invoice_mail(n) for n in range(3)])
    scenario.write_config(scenario.imap_account())
    stored = threading.Event()
    release = threading.Event()
    original = scenario.doc2._record

    def record_then_hang(attempt, upload=None):
        original(attempt, upload)
        if upload is not None and not stored.is_set():
            stored.set()  # the first upload is stored: hold its answer until the importer is dead
            release.wait(10)

    monkeypatch.setattr(scenario.doc2, "_record", record_then_hang)
    process = _start_cli(scenario)
    try:
        assert stored.wait(60), "no upload reached DOC²"
        process.kill()
        stdout, stderr = process.communicate(timeout=30)
    finally:
        release.set()
    observe("killed importer", stdout + stderr)
    assert process.returncode == -9
    first = scenario.doc2.uploads[0].custom_doc_id

    result = scenario.cli("import", "--json")
    assert result.returncode == 0, result.stderr

    ids = [upload.custom_doc_id for upload in scenario.doc2.uploads]
    assert ids.count(first) == 2, "the upload whose answer was lost is sent again, with the same custom_doc_id"
    assert len(ids) == 4 and len(set(ids)) == 3, "nothing else twice"
    assert len(scenario.messages("Processed")) == 3 and scenario.messages("INBOX") == []
    # Killed while uploading, not while reading a message: no attempt is counted against any message.
    with contextlib.closing(sqlite3.connect(scenario.tmp / "state.sqlite3")) as db:
        assert db.execute("SELECT COUNT(*) FROM messages WHERE attempts > 0").fetchone() == (0,)


def _mark(scenario) -> str | None:
    """The account's "attempt started" mark, read from the state database as another process would."""
    path = scenario.tmp / "state.sqlite3"
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT value FROM cursors WHERE account='mail' AND name=?", (MARK,)).fetchone()
    except sqlite3.OperationalError:
        return None  # the schema is not there yet
    return row[0] if row else None


def test_a_message_that_kills_the_importer_counts_as_an_attempt_and_ends_in_failed(scenario):
    """The importer dies (SIGKILL, as the out-of-memory killer or the Function's time-out would end it) while it
    reads a big message: that counts as the message's attempt, so it reaches the failed folder instead of blocking
    its account for ever; the next run does not read it again and imports the others."""
    big = invoice_mail("big", attachments=[("big.bin", os.urandom(40 * 1024 * 1024), "application/octet-stream")])
    scenario.append_many([big, invoice_mail(1), invoice_mail(2)])  # the oldest first: read first
    scenario.write_config(scenario.imap_account(max_attempts=1))

    process = _start_cli(scenario)
    try:
        deadline = time.monotonic() + 120
        while _mark(scenario) is None and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        marked = _mark(scenario)
        process.kill()
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    observe("killed importer", stdout + stderr)
    assert marked is not None and process.returncode == -9, "killed while reading the big message"
    assert _mark(scenario) == marked, "the mark outlived the process"
    assert scenario.doc2.uploads == []

    result = scenario.cli("import", "--json")
    assert result.returncode == 0, result.stderr
    (account,) = json.loads(result.stdout)["accounts"]
    assert account["messages_moved_to_failed"] == 1 and account["messages_imported"] == 2
    (problem,) = account["problems"]
    assert problem["message"] == marked and "stopped while reading this message" in problem["error"]
    (failed,) = scenario.messages("Failed")
    assert b"big.bin" in failed and len(scenario.messages("Processed")) == 2 and scenario.messages("INBOX") == []
    assert sorted(u.filename for u in scenario.doc2.uploads) == ["invoice-1.pdf", "invoice-2.pdf"], "not read again"
    assert _mark(scenario) is None
