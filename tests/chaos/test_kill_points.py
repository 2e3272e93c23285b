"""The nastiest moment to die, hit on purpose rather than by chance: the importer is SIGKILLed after DOC² stored an
upload and before the answer reached it (so before the state store could record it)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

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
