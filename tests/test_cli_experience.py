"""What a person at the terminal sees: progress as the import goes, a dry run that names the mail, test-login one
check at a time with DOC² on its own line, and no traceback for a mistake of theirs or for Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ingest.errors import ConfigError

from .mail import invoice_mail
from .support.scenario import PROJECT_ROOT


def test_progress_names_each_message_by_sender_subject_and_date(scenario):
    scenario.append_many([invoice_mail(n, subject=f"Invoice {n} for March") for n in range(3)])
    scenario.write_config(scenario.imap_account())

    dry = scenario.cli("import", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "account mail (imap): 3 messages to look at" in dry.stderr
    assert '  2/3 billing@supplier.example | "Invoice 1 for March" | 20' in dry.stderr
    assert "would upload invoice-2.pdf (application/pdf, " in dry.stdout
    assert 'from billing@supplier.example | "Invoice 2 for March" | 20' in dry.stdout

    run = scenario.cli("import")
    assert run.returncode == 0, run.stderr
    assert '  3/3 billing@supplier.example | "Invoice 2 for March"' in run.stderr
    assert "UID" not in run.stderr.replace("UIDVALIDITY", "")

    scenario.append(invoice_mail(9))
    quiet = scenario.cli("--quiet", "import")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # only the summary, on standard output
    assert "mail (imap): ok; 1 messages seen, 1 imported" in quiet.stdout


def test_user_errors_end_in_one_clear_line_without_traceback(scenario, tmp_path):
    scenario.write_config(scenario.imap_account())
    scenario.extra_env["INGEST_RUN_BUDGET_SECONDS"] = "5m"
    budget = scenario.cli("import")
    assert budget.returncode == 2
    assert "INGEST_RUN_BUDGET_SECONDS: '5m' is not a number of seconds" in budget.stderr
    assert "Traceback" not in budget.stderr
    del scenario.extra_env["INGEST_RUN_BUDGET_SECONDS"]

    with pytest.raises(ConfigError):  # written, and refused on loading
        scenario.write_config(scenario.imap_account(ca_file=str(tmp_path / "missing-ca.pem")))
    for command in ("check", "import", "test-login"):
        result = scenario.cli(command)
        assert result.returncode == 2, (command, result.stderr)
        assert "account 'mail': field 'ca_file'" in result.stderr and "missing-ca.pem" in result.stderr
        assert "Traceback" not in result.stderr


def test_ctrl_c_says_what_finished_and_that_a_rerun_takes_the_rest(scenario):
    scenario.append_many([invoice_mail(n) for n in range(6)])
    scenario.write_config(scenario.imap_account(), scenario.pop3_account())
    scenario.doc2.latency_seconds = 0.5
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DOC2_", "KEY_VAULT"))}
    env.update(scenario.environ())
    process = subprocess.Popen(
        [sys.executable, "-m", "ingest", "import"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # wait until it is in the middle of the first account
        seen.append(line)
        if line.startswith("  2/6 "):
            break
    process.send_signal(signal.SIGINT)
    try:
        _, rest = process.communicate(timeout=60)
    finally:
        process.kill()
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    (last,) = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert "no account finished; account mail was at message" in last and "run import again" in last

    scenario.doc2.latency_seconds = 0
    again = scenario.cli("import")
    assert again.returncode == 0, again.stderr
    assert len(scenario.messages("Processed")) == 6
    # Every document is in DOC²; one whose upload was under way at Ctrl-C may have been sent again, with the same
    # custom_doc_id (DOC² recognises it: PRODUCT.md), never as a new document.
    by_id = scenario.doc2.uploads_by_custom_doc_id()
    assert sorted(uploads[0].filename for uploads in by_id.values()) == sorted(f"invoice-{n}.pdf" for n in range(6))


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a DOC² that hangs)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def test_test_login_reports_doc2_on_its_own_line_whatever_the_mailbox_does(scenario, silent_server):
    scenario.write_config(scenario.imap_account(), scenario.pop3_account())
    scenario.extra_env["MAIL_PASSWORD"] = "wrong-password-for-the-test"
    result = scenario.cli("test-login")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"ok   DOC²: {scenario.doc2.url}: API key accepted"), result.stdout
    assert [line[:4] for line in lines if not line.startswith(" ")] == ["ok  ", "FAIL", "FAIL"]
    assert "FAIL mail (imap):" in result.stdout and "login refused" in result.stdout

    del scenario.extra_env["MAIL_PASSWORD"]
    scenario.extra_env["DOC2_BASE_URL"] = f"https://127.0.0.1:{silent_server}"
    hung = scenario.cli("test-login", timeout=90)  # DOC² never answers: its check times out, the mailboxes go on
    assert hung.returncode == 1
    first, *rest = hung.stdout.splitlines()
    assert first.startswith("FAIL DOC²:") and "not reachable" in first, hung.stdout
    assert "ok   mail (imap): mailbox fine" in rest and "ok   pop (pop3): mailbox fine" in rest
