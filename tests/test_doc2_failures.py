"""Whose fault a DOC² failure is (PRODUCT.md): an outage counts no attempt against any message and fails the account
for the run; a document DOC² keeps failing while it accepts others counts, and ends in the failed folder. Against
the real Dovecot and the local DOC² server."""

from __future__ import annotations

import socket

from ingest.state.sqlite import SqliteStateStore

from .mail import invoice_mail
from .support.doc2_server import Refuse, Respond


def _attempts(scenario, account: str = "mail") -> dict[str, int]:
    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    try:
        rows = store._db.execute("SELECT message_key, attempts FROM messages WHERE account=?", (account,)).fetchall()
    finally:
        store.close()
    return {key: attempts for key, attempts in rows if attempts}


def test_doc2_down_for_many_runs_counts_no_attempt_and_everything_is_imported_once_it_is_back(scenario):
    scenario.append_many([invoice_mail(n) for n in range(3)])
    scenario.write_config(scenario.imap_account())
    scenario.doc2.always(Refuse(503))

    for run in range(4):  # more runs than max_attempts
        account = scenario.run().accounts[0]
        assert account.outcome == "account_failed", f"run {run}: {account.outcome}"
        assert account.error.startswith("DOC² unavailable") and "HTTP 503" in account.error
        assert (account.messages_failed, account.messages_moved_to_failed, account.messages_imported) == (0, 0, 0)
        assert len(scenario.messages("INBOX")) == 3
    assert _attempts(scenario) == {}, "no attempt counted against any message"

    result = scenario.cli("import")
    assert result.returncode == 1, "a DOC² outage fails the run"
    assert "account_failed" in result.stdout and "DOC² unavailable" in result.stdout

    scenario.doc2.clear_faults()
    back = scenario.run().accounts[0]
    assert back.outcome == "ok", back.error
    assert (back.messages_imported, back.documents_uploaded) == (3, 3)
    assert scenario.messages("INBOX") == [] and len(scenario.messages("Processed")) == 3
    assert len(scenario.doc2.uploads_by_custom_doc_id()) == 3


def test_doc2_unreachable_stops_the_account_after_one_message_and_counts_nothing(scenario):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens here once the socket is closed
    scenario.append_many([invoice_mail(n) for n in range(4)])
    config = scenario.write_config(scenario.imap_account())
    text = scenario.config_path.read_text(encoding="utf-8").replace(
        config.doc2.base_url, f"https://127.0.0.1:{closed_port}"
    )
    scenario.config_path.write_text(text, encoding="utf-8")

    account = scenario.run().accounts[0]

    assert account.outcome == "account_failed"
    assert "DOC² unavailable" in account.error and f"127.0.0.1:{closed_port}" in account.error
    assert "status request" in account.error  # the cheap probe confirmed it: no more messages tried
    assert (account.messages_failed, account.messages_deferred) == (0, 4)
    assert len(scenario.messages("INBOX")) == 4
    assert _attempts(scenario) == {}


def test_after_an_outage_the_next_accounts_of_the_run_ask_doc2_first_and_read_no_mail(scenario):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    scenario.append_many([invoice_mail(n) for n in range(2)])
    scenario.append_many([invoice_mail(n) for n in range(2, 4)], folder="Other")
    config = scenario.write_config(
        scenario.imap_account("first"), scenario.imap_account("second", folder="Other", processed_folder="Done")
    )
    text = scenario.config_path.read_text(encoding="utf-8").replace(
        config.doc2.base_url, f"https://127.0.0.1:{closed_port}"
    )
    scenario.config_path.write_text(text, encoding="utf-8")

    first, second = scenario.run().accounts

    assert first.outcome == second.outcome == "account_failed"
    assert first.messages_deferred == 2
    assert second.error.startswith("DOC² unavailable") and "failed this run's uploads" in second.error
    assert second.messages_deferred == 0, "its mail was not even listed: no upload tried, no retries waited"
    assert len(scenario.messages("INBOX")) == 2 and len(scenario.messages("Other")) == 2
    assert _attempts(scenario, "first") == {} and _attempts(scenario, "second") == {}


def test_a_document_doc2_keeps_failing_counts_attempts_while_the_others_go_on_then_fails(scenario):
    scenario.append_many([invoice_mail(n) for n in range(4)])  # invoice-0 is the oldest: tried first
    scenario.write_config(scenario.imap_account())
    scenario.doc2.refuse_document("invoice-0", 500)

    first = scenario.run().accounts[0]
    assert first.outcome == "failed", first.error  # a message failed; the account itself did not (account_failed)
    assert (first.messages_imported, first.messages_failed) == (3, 1)
    (problem,) = first.problems
    assert problem.error.startswith("attempt 1/3") and "while accepting others" in problem.error
    assert len(scenario.messages("INBOX")) == 1

    second = scenario.run().accounts[0]
    assert second.problems[0].error.startswith("attempt 2/3")
    third = scenario.run().accounts[0]
    assert third.messages_moved_to_failed == 1
    (failed,) = scenario.messages("Failed")
    assert b"invoice-0.pdf" in failed
    assert scenario.messages("INBOX") == [] and len(scenario.messages("Processed")) == 3
    assert sorted(u.filename for u in scenario.doc2.uploads) == [f"invoice-{n}.pdf" for n in (1, 2, 3)]


def test_doc2_failing_one_document_then_going_down_is_an_outage_not_the_documents_fault(scenario):
    """The poisoned document's failure is never proven its own while DOC² accepts nothing after it."""
    scenario.append_many([invoice_mail(n) for n in range(3)])
    scenario.write_config(scenario.imap_account())
    scenario.doc2.refuse_document("invoice-0", 500)
    scenario.doc2.always(Refuse(502))

    for _ in range(3):
        account = scenario.run().accounts[0]
        assert account.outcome == "account_failed" and account.messages_failed == 0
    assert _attempts(scenario) == {} and len(scenario.messages("INBOX")) == 3


def test_a_4xx_refusal_is_the_documents_fault_and_goes_to_failed_after_max_attempts(scenario):
    scenario.append_many([invoice_mail(n) for n in range(3)])
    scenario.write_config(scenario.imap_account(max_attempts=2))
    scenario.doc2.refuse_document("invoice-1", 422)

    runs = [scenario.run().accounts[0] for _ in range(2)]

    assert [r.outcome for r in runs] == ["failed", "failed"]  # a message failed; the account did not
    assert [r.messages_failed for r in runs] == [1, 1] and runs[1].messages_moved_to_failed == 1
    assert runs[1].problems[0].error.startswith("attempt 2/2") and "HTTP 422" in runs[1].problems[0].error
    assert len(scenario.messages("Failed")) == 1 and len(scenario.messages("Processed")) == 2
    assert _attempts(scenario) == {runs[1].problems[0].message: 2}


def test_doc2_answering_with_a_redirect_is_a_configuration_error_and_test_login_says_so(scenario):
    scenario.append_many([invoice_mail(n) for n in range(2)])
    scenario.write_config(scenario.imap_account())
    scenario.doc2.moved_to = "https://api.docbits.example"

    account = scenario.run().accounts[0]

    assert account.outcome == "account_failed"
    assert "answered HTTP 301 pointing to https://api.docbits.example/document/process" in account.error
    assert "set doc2.base_url" in account.error
    assert scenario.doc2.requests_total == 1, "stopped at the first answer, not one refusal per document"
    assert account.messages_failed == 0 and len(scenario.messages("INBOX")) == 2
    assert _attempts(scenario) == {}

    login = scenario.cli("test-login")
    assert login.returncode == 1
    assert "HTTP 301" in login.stdout and "set doc2.base_url" in login.stdout


def test_a_web_page_answering_for_doc2_is_a_configuration_error_and_moves_no_mail(scenario):
    """A base_url that points at a web app answering 200 HTML to any path: before, that was taken for success and the
    mail moved to the processed folder with its documents never in DOC²."""
    scenario.append_many([invoice_mail(n) for n in range(2)])
    scenario.write_config(scenario.imap_account())
    scenario.doc2.impostor = True

    account = scenario.run().accounts[0]

    assert account.outcome == "account_failed"
    assert "not DOC²'s API" in account.error and "text/html" in account.error
    assert account.messages_imported == 0 and account.messages_failed == 0
    assert len(scenario.messages("INBOX")) == 2 and scenario.messages("Processed") == []
    assert _attempts(scenario) == {}

    login = scenario.cli("test-login")
    assert login.returncode == 1 and "not DOC²'s API" in login.stdout


def test_doc2s_retry_after_is_honoured(scenario):
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    scenario.doc2.plan(Respond(429, headers={"Retry-After": "2"}))

    account = scenario.run().accounts[0]

    assert account.outcome == "ok" and account.documents_uploaded == 1
    first, second = scenario.doc2.attempts
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.9, "the retry waited as DOC² asked"


def test_nonsense_retry_after_values_do_not_break_the_retry(scenario):
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    for value in ("nan", "-5", "soon", "Thu, 01 Jan 1970 00:00:00 GMT"):
        scenario.doc2.plan(Respond(503, headers={"Retry-After": value}))

    account = scenario.run().accounts[0]

    assert account.outcome == "ok", account.error
    assert account.documents_uploaded == 1 and scenario.doc2.requests_total == 5


def test_a_retry_after_beyond_the_runs_time_budget_ends_the_run_instead_of_waiting(scenario):
    scenario.append_many([invoice_mail(n) for n in range(3)])
    scenario.write_config(scenario.imap_account())
    scenario.extra_env["INGEST_RUN_BUDGET_SECONDS"] = "30"
    scenario.doc2.always(Respond(429, headers={"Retry-After": "100000"}))

    code, report = scenario.cli_json()  # before: four waits of 300 s (the CLI is given 120 s)

    (account,) = report["accounts"]
    assert code == 0 and account["outcome"] == "partial"
    assert "time budget leaves no time" in account["error"]
    assert scenario.doc2.requests_total == 1, "no retry started, no other message tried"
    assert account["messages_deferred"] == 3 and account["messages_failed"] == 0
    assert _attempts(scenario) == {} and len(scenario.messages("INBOX")) == 3
