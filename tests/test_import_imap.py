"""IMAP mailboxes into DOC², end to end: real IMAP servers, the local DOC² server, the real pipeline.

The core scenarios take ``imap_scenario`` and run once per kind of IMAP server (see ``tests/conftest.py``); their
folders are written as "/"-paths, as in an accounts file, whatever the server's own naming.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator

import pytest

from ingest.state.sqlite import SqliteStateStore

from .mail import invoice_mail, pdf_bytes
from .support.doc2_server import Respond
from .support.dovecot import Dovecot
from .support.scenario import Scenario


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_every_attachment_uploaded_once_and_mail_moved(imap_scenario, security):
    raws = [invoice_mail(n) for n in range(3)]
    imap_scenario.append_many(raws)
    imap_scenario.write_config(imap_scenario.imap_account(security=security, doc2_source="email:Invoices"))

    report = imap_scenario.run()

    account = report.accounts[0]
    assert account.outcome == "ok", account.error
    assert (account.messages_seen, account.messages_imported, account.documents_uploaded) == (3, 3, 3)
    uploads = imap_scenario.doc2.uploads
    assert sorted(u.filename for u in uploads) == [f"invoice-{n}.pdf" for n in range(3)]
    for upload in uploads:
        assert upload.content_type == "application/pdf"
        assert upload.content == pdf_bytes(f"Invoice {upload.filename[8]}")
        assert upload.source == "email:Invoices"
        assert upload.metadata["mailbox"] == "mail"
        assert upload.metadata["email_from"] == "billing@supplier.example"
        assert upload.metadata["email_subject"] == f"Invoice {upload.filename[8]}"
        assert upload.metadata["email_message_id"].endswith("@supplier.example")
        assert "T" in upload.metadata["email_received"]
        uuid.UUID(upload.metadata["custom_doc_id"])
    assert imap_scenario.messages("INBOX") == []
    assert sorted(imap_scenario.messages("Processed")) == sorted(raws)

    again = imap_scenario.run()
    assert again.accounts[0].messages_seen == 0
    assert len(imap_scenario.doc2.uploads) == 3


def test_fetching_does_not_mark_mail_seen(imap_scenario):
    imap_scenario.append(invoice_mail(1))
    imap_scenario.write_config(imap_scenario.imap_account(processed_folder="Done"))
    imap_scenario.run(dry_run=True)
    flags = imap_scenario.dovecot.folder_flags(imap_scenario.user, imap_scenario.password, "INBOX")
    assert flags and all("\\Seen" not in f for f in flags.values())


def test_custom_doc_id_is_stable_for_the_same_document(imap_scenario):
    raw = invoice_mail(7)
    imap_scenario.append(raw)
    imap_scenario.write_config(imap_scenario.imap_account())
    imap_scenario.run()
    first = imap_scenario.doc2.uploads[0].custom_doc_id
    # The same mail arriving again (e.g. moved back by hand) maps to the same custom_doc_id: nothing re-uploaded.
    imap_scenario.append(raw)
    report = imap_scenario.run()
    assert report.accounts[0].documents_already_in_doc2 == 1
    assert [u.custom_doc_id for u in imap_scenario.doc2.uploads] == [first]
    assert imap_scenario.messages("INBOX") == []


def test_wrong_password_is_a_clear_account_error_and_moves_nothing(imap_scenario):
    imap_scenario.append(invoice_mail(1))
    imap_scenario.write_config(imap_scenario.imap_account())
    imap_scenario.extra_env["MAIL_PASSWORD"] = "not-the-password"

    result = imap_scenario.cli("import")

    assert result.returncode == 1
    assert "login refused" in result.stdout and imap_scenario.user in result.stdout
    assert "mail-password" in result.stdout  # names the secret to fix...
    assert "not-the-password" not in result.stdout + result.stderr  # ...never its value
    assert imap_scenario.doc2.uploads == []
    assert len(imap_scenario.messages("INBOX")) == 1


def test_rejected_doc2_key_stops_the_account_and_moves_nothing(scenario):
    scenario.append_many([invoice_mail(1), invoice_mail(2)])
    scenario.write_config(scenario.imap_account())
    scenario.extra_env["DOC2_API_KEY"] = "revoked-key"

    report = scenario.run()

    account = report.accounts[0]
    assert account.outcome == "account_failed"
    assert "rejected the API key (HTTP 401)" in account.error
    assert "revoked-key" not in account.error
    assert len(scenario.messages("INBOX")) == 2
    assert scenario.doc2.uploads == []
    assert scenario.doc2.requests_total == 1  # stopped at the first refusal, did not try every message


def test_doc2_server_errors_are_retried_and_upload_once(scenario):
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    scenario.doc2.plan(Respond(500), Respond(503), Respond(429, headers={"Retry-After": "0"}))

    report = scenario.run()

    assert report.accounts[0].documents_uploaded == 1
    assert len(scenario.doc2.uploads) == 1
    assert scenario.doc2.requests_total == 4
    assert len(scenario.messages("Processed")) == 1


def test_failure_between_upload_and_move_uploads_nothing_twice(scenario):
    """The move fails for real after the upload (the processed folder exists, but the server cannot write into it);
    a re-run with that fixed moves the mail without a second upload."""
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    with _unwritable(scenario.dovecot, scenario, "Processed"):
        first = scenario.run()
        assert first.accounts[0].outcome == "account_failed", first.accounts[0]
        assert "cannot move UID 1 to 'Processed'" in (first.accounts[0].error or "")
        assert len(scenario.doc2.uploads) == 1
        assert len(scenario.messages("INBOX")) == 1

    second = scenario.run()
    assert second.accounts[0].documents_already_in_doc2 == 1
    assert len(scenario.doc2.uploads) == 1
    assert len(scenario.messages("Processed")) == 1


@contextlib.contextmanager
def _unwritable(dovecot, scenario, folder: str) -> Iterator[None]:
    """The folder exists, but its maildir belongs to root and is read-only for the mail user (nobody)."""
    assert isinstance(dovecot, Dovecot) and dovecot.layout == "default"
    with dovecot.connect(scenario.user, scenario.password) as client:
        client.create_folder(folder)
    directory = dovecot.maildir(scenario.user) / folder
    parts = [directory / sub for sub in ("cur", "new", "tmp")]
    for part in parts:
        part.mkdir(exist_ok=True)
    saved = {part: (part.stat().st_uid, part.stat().st_gid, part.stat().st_mode) for part in parts}
    for part in parts:
        os.chown(part, 0, 0)
        part.chmod(0o555)
    try:
        yield
    finally:
        for part, (uid, gid, mode) in saved.items():
            os.chown(part, uid, gid)
            part.chmod(mode)


@pytest.fixture(scope="module")
def dovecot_quick_locks(tmp_path_factory, test_ca) -> Iterator[Dovecot]:
    """Dovecot that gives up waiting for a folder's lock after a second (the default is minutes)."""
    with Dovecot(
        tmp_path_factory.mktemp("dovecot-locks"), test_ca, extra_config="mail_max_lock_timeout = 1s"
    ) as server:
        yield server


def test_a_busy_server_ends_the_run_not_the_account(tmp_path, test_ca, dovecot_quick_locks, doc2_server):
    """Another session holds the processed folder's lock: the move is refused for now ("Timeout while waiting for
    lock"). The run stops as partial with the upload recorded and the mail in place; the next run moves it without
    a second upload. (Exchange Online's throttling, "Server Unavailable", takes the same path.)"""
    dovecot = dovecot_quick_locks
    dovecot.add_user("busy", "pw-busy")
    scenario = Scenario(tmp_path, test_ca, dovecot, doc2_server, "busy", "pw-busy")
    scenario.append(invoice_mail(1))
    with dovecot.connect("busy", "pw-busy") as client:
        client.create_folder("Processed")
        client.select_folder("Processed")  # Dovecot writes the folder's uid list now
    lock = dovecot.maildir("busy") / "Processed" / "dovecot-uidlist.lock"
    scenario.write_config(scenario.imap_account())

    lock.write_text("held by another session")
    first = scenario.run().accounts[0]
    lock.unlink()

    assert first.outcome == "partial", first.error
    assert "the server is busy" in (first.error or "") and "waiting for lock" in (first.error or "")
    assert len(scenario.doc2.uploads) == 1
    assert len(scenario.messages("INBOX")) == 1

    second = scenario.run().accounts[0]
    assert second.outcome == "ok", second.error
    assert second.documents_already_in_doc2 == 1
    assert len(scenario.doc2.uploads) == 1
    assert len(scenario.messages("Processed")) == 1


def test_connection_reset_after_doc2_stored_the_upload_repeats_the_same_custom_doc_id(scenario):
    from .support.doc2_server import ResetAfterStore

    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    scenario.doc2.plan(ResetAfterStore())
    scenario.run()
    ids = [u.custom_doc_id for u in scenario.doc2.uploads]
    assert len(ids) == 2 and len(set(ids)) == 1  # DOC² can recognise the retry
    assert len(scenario.messages("Processed")) == 1


def test_non_ascii_folders(imap_scenario):
    imap_scenario.append(invoice_mail(1), folder="Eingang/Lieferanten-Ü")
    imap_scenario.write_config(
        imap_scenario.imap_account(
            folder="Eingang/Lieferanten-Ü", processed_folder="Erledigt/Größe", failed_folder="Fehler/Übel"
        )
    )
    report = imap_scenario.run()
    assert report.accounts[0].documents_uploaded == 1
    assert "Erledigt/Größe" in imap_scenario.folders()
    assert len(imap_scenario.messages("Erledigt/Größe")) == 1
    assert imap_scenario.messages("Eingang/Lieferanten-Ü") == []


def test_dry_run_lists_and_changes_nothing(imap_scenario):
    imap_scenario.append_many([invoice_mail(1), invoice_mail(2)])
    imap_scenario.write_config(imap_scenario.imap_account())

    result = imap_scenario.cli("import", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "would upload invoice-1.pdf" in result.stdout and "would upload invoice-2.pdf" in result.stdout
    processed = imap_scenario.native("Processed")  # INBOX.Processed where the server wants that
    assert f"note: processed folder 'Processed' -> {processed!r}: missing: the import will make it" in result.stdout
    assert imap_scenario.doc2.requests_total == 0
    assert len(imap_scenario.messages("INBOX")) == 2
    assert "Processed" not in imap_scenario.folders()
    assert imap_scenario.run().accounts[0].documents_uploaded == 2  # the dry run recorded nothing


def test_json_report_on_stdout(scenario):
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    status, report = scenario.cli_json()
    assert status == 0
    assert report["totals"]["documents_uploaded"] == 1
    assert report["accounts"][0]["account"] == "mail"
    assert report["accounts"][0]["outcome"] == "ok"


def test_a_second_run_on_the_same_account_skips_and_says_so(scenario):
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    with store.account_lock("mail"):
        result = scenario.cli("import")
    store.close()
    assert result.returncode == 0
    assert "another run is working on it" in result.stdout
    assert scenario.doc2.uploads == []
    assert scenario.cli("import").returncode == 0
    assert len(scenario.doc2.uploads) == 1


def test_one_broken_account_does_not_stop_the_others(scenario):
    scenario.append(invoice_mail(1))
    scenario.write_config(
        scenario.imap_account(name="broken", password_secret="other-password"),
        scenario.imap_account(name="good"),
    )
    report = scenario.run()
    outcomes = {a.account: (a.outcome, a.error) for a in report.accounts}
    assert outcomes["broken"][0] == "account_failed"
    assert "OTHER_PASSWORD" in outcomes["broken"][1]
    assert outcomes["good"] == ("ok", None)
    assert len(scenario.doc2.uploads) == 1


def test_large_mailbox_is_listed_and_fetched_in_chunks(scenario):
    raws = [invoice_mail(n) for n in range(60)]
    scenario.append_many(raws)
    scenario.write_config(scenario.imap_account())
    report = scenario.run()
    assert report.accounts[0].documents_uploaded == 60
    digests = {hashlib.sha256(u.content).hexdigest() for u in scenario.doc2.uploads}
    assert len(digests) == 60
    assert len(scenario.messages("Processed")) == 60
