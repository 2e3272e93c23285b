"""Folder names across IMAP servers: the accounts file's "/"-paths land where the server wants them, names in the
server's own form work too, special folders are found by SPECIAL-USE, and a folder the server refuses stops the
account before any document is uploaded."""

from __future__ import annotations

import pytest

from .mail import invoice_mail
from .support.scenario import Scenario


def test_folder_paths_are_mapped_onto_the_servers_namespace(imap_scenario):
    """The report that started it: on a hosting-style server "Archiv/2024" is INBOX.Archiv.2024; the mail used to
    be uploaded and then stay in the inbox ("Client tried to access nonexistent namespace")."""
    s = imap_scenario
    s.append_many([invoice_mail(1), invoice_mail(2)], folder="Eingang/Rechnungen")
    s.write_config(s.imap_account(folder="Eingang/Rechnungen", processed_folder="Archiv/2024", failed_folder="Fehler"))

    account = s.run().accounts[0]

    assert account.outcome == "ok", account.error
    assert account.documents_uploaded == 2
    assert len(s.messages("Archiv/2024")) == 2
    assert s.messages("Eingang/Rechnungen") == []
    assert {"Archiv/2024", "Fehler"} <= set(s.folders())
    assert s.native("Archiv/2024") in s.dovecot.list_folders(s.user, s.password)


def test_names_in_the_servers_own_form_work_too(imap_scenario):
    s = imap_scenario
    s.append(invoice_mail(1))
    s.write_config(s.imap_account(processed_folder=s.native("Erledigt/2024")))  # INBOX.Erledigt.2024 when hosted

    assert s.run().accounts[0].documents_uploaded == 1
    assert len(s.messages("Erledigt/2024")) == 1


def test_test_login_shows_how_each_folder_maps_and_makes_the_missing_ones(imap_scenario):
    s = imap_scenario
    s.append(invoice_mail(1))
    s.write_config(s.imap_account(processed_folder="Archiv/2024"))

    result = s.cli("test-login")

    assert result.returncode == 0, result.stdout + result.stderr
    expected_prefix = "no personal prefix" if not s.dovecot.prefix else f"personal prefix {s.dovecot.prefix!r}"
    assert f"folder names on this server: {expected_prefix}, separator {s.dovecot.separator!r}" in result.stdout
    assert "source folder 'INBOX' -> 'INBOX': 1 messages" in result.stdout
    assert f"processed folder 'Archiv/2024' -> {s.native('Archiv/2024')!r}: created now" in result.stdout
    assert f"failed folder 'Failed' -> {s.native('Failed')!r}: created now" in result.stdout
    assert {"Archiv/2024", "Failed"} <= set(s.folders())
    assert s.doc2.uploads == [] and len(s.messages("INBOX")) == 1

    again = s.cli("test-login")
    assert f"processed folder 'Archiv/2024' -> {s.native('Archiv/2024')!r}: exists" in again.stdout


REFUSED = [
    # Dovecot refuses names starting with "~" (hosting-style: inside the INBOX. namespace)
    pytest.param("dovecot_hosting", "~Import", "INBOX.~Import", "Invalid mailbox name", id="dovecot_hosting"),
    # Cyrus's ACLs: a folder in another user's namespace, written in server form, is not ours to make
    pytest.param("cyrus", "user.someone.Import", "user.someone.Import", "Permission denied", id="cyrus"),
]


@pytest.mark.parametrize("role", ["processed", "failed"])
@pytest.mark.parametrize(("server_fixture", "folder", "server_name", "reason"), REFUSED)
def test_a_folder_the_server_refuses_stops_the_account_before_any_upload(
    request, tmp_path, test_ca, doc2_server, role, server_fixture, folder, server_name, reason
):
    """A target folder the server will not make: an account error naming the folder, found before any document
    reaches DOC²; the mail stays. (Before, the documents were uploaded and then the move failed on every run.)"""
    server = request.getfixturevalue(server_fixture)
    user = f"refused{role}"
    server.add_user(user, "pw-refused")
    server.add_user("someone", "pw-someone")  # the other user whose folders are not ours
    s = Scenario(tmp_path, test_ca, server, doc2_server, user, "pw-refused")
    s.append_many([invoice_mail(1), invoice_mail(2)])
    s.write_config(s.imap_account(**{f"{role}_folder": folder}))
    expected = f"the {role} folder {folder!r} (on this server {server_name!r}) cannot be created"

    login = s.cli("test-login")
    assert login.returncode == 1
    assert expected in login.stdout
    s.doc2.reset()  # test-login asked DOC² about the key

    account = s.run().accounts[0]

    assert account.outcome == "account_failed"
    assert expected in account.error
    assert reason in account.error  # the server's own reason
    assert f"fix '{role}_folder'" in account.error
    assert s.doc2.requests_total == 0
    assert len(s.messages("INBOX")) == 2


def test_special_folders_are_found_by_special_use(imap_scenario):
    """``\\Archive`` in the accounts file is the folder the server marks \\Archive, whatever its name."""
    s = imap_scenario
    s.append(invoice_mail(9), folder="Archive")  # the folder the server marks \Archive exists once created
    s.append(invoice_mail(1))
    s.write_config(s.imap_account(processed_folder="\\Archive"))

    login = s.cli("test-login")
    assert f"processed folder '\\\\Archive' -> {s.native('Archive')!r} (\\Archive): exists" in login.stdout
    dry = s.run(dry_run=True).accounts[0]
    assert f"processed folder '\\\\Archive' -> {s.native('Archive')!r} (\\Archive): exists" in dry.notes

    assert s.run().accounts[0].documents_uploaded == 1
    assert len(s.messages("Archive")) == 2


def test_a_special_use_the_server_does_not_have_is_an_account_error(imap_scenario):
    s = imap_scenario
    s.append(invoice_mail(1))
    s.write_config(s.imap_account(processed_folder="\\Drafts"))

    account = s.run().accounts[0]

    assert account.outcome == "account_failed"
    assert "the server marks no folder as \\Drafts" in account.error
    assert s.doc2.requests_total == 0


def test_a_trash_folder_as_target_is_flagged_at_test_login(imap_scenario):
    s = imap_scenario
    s.append(invoice_mail(1), folder="Trash")
    s.write_config(s.imap_account(failed_folder="Trash"))

    result = s.cli("test-login")

    assert result.returncode == 0, result.stdout
    assert "warning: failed folder 'Trash': the server marks it \\Trash" in result.stdout


def test_importing_from_an_all_mail_folder_is_refused(imap_scenario):
    """Gmail's All Mail (\\All) lists every message, moved or not: an import from it would never end."""
    s = imap_scenario
    s.append(invoice_mail(1), folder="All Mail")
    s.write_config(s.imap_account(folder="All Mail"))

    account = s.run().accounts[0]

    assert account.outcome == "account_failed"
    assert "is the server's \\All folder" in account.error
    assert s.doc2.requests_total == 0


def test_a_parent_folder_that_cannot_hold_mail_is_made_a_real_one(imap_scenario):
    """Dovecot lists the parent of ``Eingang/Lieferanten`` (\\Noselect) though a move into it fails: it counted as
    existing, and the mail stayed after its documents were uploaded."""
    s = imap_scenario
    s.append(invoice_mail(1), folder="Eingang/Lieferanten")
    s.write_config(s.imap_account(folder="Eingang/Lieferanten", processed_folder="Eingang"))

    account = s.run().accounts[0]

    assert account.outcome == "ok", account.error
    assert len(s.messages("Eingang")) == 1
    assert s.messages("Eingang/Lieferanten") == []


def test_processed_and_failed_folders_are_made_where_the_server_wants_them(imap_scenario):
    """Both target folders, nested, on each server: a document DOC² refuses (HTTP 422, one attempt allowed) sends
    its mail to the failed folder, the other mail goes to the processed folder."""
    s = imap_scenario
    s.append_many([invoice_mail(1), invoice_mail(2)])
    s.write_config(s.imap_account(processed_folder="Import/Erledigt", failed_folder="Import/Fehler", max_attempts=1))
    s.doc2.refuse_document("invoice-2", 422)

    account = s.run().accounts[0]

    assert (account.messages_imported, account.messages_moved_to_failed) == (1, 1), account.error
    (failed,) = s.messages("Import/Fehler")
    assert b"Subject: Invoice 2" in failed
    (processed,) = s.messages("Import/Erledigt")
    assert b"Subject: Invoice 1" in processed
    assert s.messages("INBOX") == []
    assert {s.native("Import/Erledigt"), s.native("Import/Fehler")} <= set(s.dovecot.list_folders(s.user, s.password))
