"""Nothing travels unencrypted or to an unverified server: DOC²'s certificate is checked, POP3 without STLS is
refused before the password is sent (IMAP's STARTTLS twin is in tests/test_tls_and_login.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import yaml

from ingest.state.sqlite import SqliteStateStore
from tests.mail import invoice_mail
from tests.support.ca import make_test_ca


def _doc2_without_ca_file(scenario, **doc2: str) -> None:
    """The accounts file with a DOC² section that names no CA (or the one given)."""
    scenario.write_config(scenario.imap_account())
    data = yaml.safe_load(scenario.config_path.read_text())
    data["doc2"].pop("ca_file")
    data["doc2"].update(doc2)
    scenario.config_path.write_text(yaml.safe_dump(data))


def test_doc2_with_an_untrusted_certificate_stops_the_account_and_counts_no_attempt(scenario, tmp_path):
    """A certificate problem is the configuration's fault, not the message's: nothing may go to the failed
    folder because of it, however many runs fail."""
    other = make_test_ca(tmp_path / "other-ca", common_name="someone else")
    scenario.append(invoice_mail(1))
    _doc2_without_ca_file(scenario, ca_file=str(other.ca_cert))

    for _ in range(4):  # more runs than max_attempts
        account = scenario.run().accounts[0]
        assert account.outcome == "account_failed"
        assert "TLS certificate not trusted" in account.error and "doc2.ca_file" in account.error

    assert scenario.doc2.requests_total == 0  # the handshake failed: no request, no document left our hands
    assert len(scenario.messages("INBOX")) == 1
    assert scenario.messages("Failed") == []
    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    try:
        assert store.settled_keys("mail") == set()
        assert all(store.message("mail", key) is None for key in ("1", f"{_uidvalidity(scenario)}:1"))
    finally:
        store.close()


def test_doc2_self_signed_is_refused_unless_its_ca_is_configured(scenario):
    scenario.append(invoice_mail(1))
    _doc2_without_ca_file(scenario)
    scenario.extra_env["SSL_CERT_FILE"] = "/etc/ssl/certs/ca-certificates.crt"  # the public CAs only

    refused = scenario.cli("import")
    assert refused.returncode == 1
    assert "TLS certificate not trusted" in refused.stdout
    login = scenario.cli("test-login")
    assert login.returncode == 1 and "certificate not trusted" in login.stdout
    assert scenario.doc2.uploads == [] and len(scenario.messages("INBOX")) == 1

    scenario.extra_env["SSL_CERT_FILE"] = str(scenario.ca.ca_cert)  # the standard variable names the private CA
    accepted = scenario.cli("import")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert len(scenario.doc2.uploads) == 1


def _uidvalidity(scenario) -> int:
    with scenario.dovecot.connect(scenario.user, scenario.password) as client:
        return int(client.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"])


@pytest.fixture
def pop3_without_stls() -> Iterator[tuple[int, list[bytes]]]:
    """A tiny POP3 server whose CAPA lists no STLS; it records every command it receives."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        with connection:
            connection.sendall(b"+OK fake POP3 ready\r\n")
            for line in connection.makefile("rb"):
                seen.append(line)
                command = line.split(b" ", 1)[0].strip().upper()
                if command == b"CAPA":
                    connection.sendall(b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n")
                elif command == b"QUIT":
                    connection.sendall(b"+OK bye\r\n")
                    return
                else:
                    connection.sendall(b"-ERR not here\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, seen
    server.close()
    thread.join(timeout=5)


def test_pop3_stls_not_offered_is_refused_never_downgraded(scenario, pop3_without_stls):
    port, seen = pop3_without_stls
    scenario.write_config(scenario.pop3_account(security="starttls", port=port))
    account = scenario.run().accounts[0]
    assert account.outcome == "account_failed"
    assert "does not offer STLS" in account.error
    commands = [line.split(b" ", 1)[0].strip().upper() for line in seen]
    assert b"USER" not in commands and b"PASS" not in commands and b"AUTH" not in commands, seen


def test_pop3_stls_is_used_when_offered(scenario):
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.pop3_account(security="starttls"))
    account = scenario.run().accounts[0]
    assert (account.outcome, account.documents_uploaded) == ("ok", 1)
    logins = [line for line in scenario.dovecot.log_text().splitlines() if "pop3-login: Info: Login" in line]
    mine = [line for line in logins if f"user=<{scenario.user}>" in line]
    assert mine and all(", TLS," in line for line in mine), mine
