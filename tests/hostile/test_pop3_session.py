"""One message POP3 cannot read must not break the session for the messages after it."""

from __future__ import annotations

import poplib
import socket

from tests.mail import invoice_mail

from .corpus import TEXT, attachment, multipart


def test_long_lines_are_read_over_pop3(scenario):
    """poplib's own limit is 2,048 bytes a line; real mail (HTML, long headers) has longer lines."""
    raw = multipart("long-line", [TEXT, attachment()], extra=b"X-Long: " + b"x" * 100_000 + b"\r\n")
    scenario.append_many([raw, invoice_mail(1)])
    scenario.write_config(scenario.pop3_account())
    report = scenario.run()
    assert (report.accounts[0].messages_imported, report.accounts[0].messages_failed) == (2, 0)


def test_a_message_that_breaks_the_session_costs_only_itself(scenario, monkeypatch):
    """A reply poplib gives up on half-way ("line too long") leaves the rest of it on the wire: every later
    command would read it. The adapter opens a new session, and only that message counts a failed attempt."""
    monkeypatch.setattr(poplib, "_MAXLINE", 4096)
    unreadable = multipart("unreadable", [TEXT, attachment()], extra=b"X-Long: " + b"x" * 10_000 + b"\r\n")
    scenario.append_many([invoice_mail(1), unreadable, invoice_mail(2), invoice_mail(3)])
    scenario.write_config(scenario.pop3_account(max_attempts=2))

    first = scenario.run().accounts[0]

    assert first.outcome == "failed", first.error  # the run went through; one message failed
    assert (first.messages_imported, first.messages_failed) == (3, 1)
    assert "line too long" in first.problems[0].error
    assert len(scenario.doc2.uploads) == 3

    second = scenario.run().accounts[0]
    assert (second.messages_imported, second.messages_moved_to_failed) == (0, 1)
    third = scenario.run().accounts[0]
    assert (third.messages_seen, third.messages_remembered) == (0, 4)
    assert len(scenario.doc2.uploads) == 3


def test_a_connection_dropped_during_retr_counts_no_attempt(scenario, monkeypatch):
    """The server hanging up is the connection's fault: the run stops for this account, the message keeps its
    attempts (a few Dovecot restarts must not send good mail to "failed")."""
    scenario.append_many([invoice_mail(1), invoice_mail(2)])
    scenario.write_config(scenario.pop3_account(max_attempts=1))
    real_putcmd = poplib.POP3._putcmd  # type: ignore[attr-defined]
    calls = []

    def hang_up_once(self, line):
        if line.startswith("RETR") and not calls:
            calls.append(line)
            self.sock.shutdown(socket.SHUT_RDWR)  # the connection drops as the message is asked for
        return real_putcmd(self, line)

    monkeypatch.setattr(poplib.POP3, "_putcmd", hang_up_once)
    first = scenario.run().accounts[0]
    assert (first.outcome, first.messages_failed, first.messages_moved_to_failed) == ("partial", 0, 0)
    assert "connection lost" in (first.error or "")
    second = scenario.run().accounts[0]
    assert (second.outcome, second.messages_imported) == ("ok", 2)
