"""TLS is verified, STARTTLS is never downgraded, and TEST LOGIN says what is wrong."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from .mail import invoice_mail
from .support.ca import make_test_ca


@pytest.fixture
def imap_without_starttls() -> Iterator[int]:
    """A tiny IMAP server that greets and advertises no STARTTLS; it records whether a LOGIN came."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fake ready\r\n")
            reader = connection.makefile("rb")
            for line in reader:
                seen.append(line)
                tag = line.split(b" ", 1)[0]
                if b"CAPABILITY" in line.upper():
                    connection.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                elif b"LOGOUT" in line.upper():
                    connection.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    connection.sendall(tag + b" BAD not here\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    server.close()
    assert not any(b"LOGIN" in line.upper() for line in seen), "the password was sent without TLS"


def test_starttls_not_offered_is_refused_never_downgraded(scenario, imap_without_starttls):
    scenario.write_config(scenario.imap_account(security="starttls", port=imap_without_starttls))
    report = scenario.run()
    account = report.accounts[0]
    assert account.outcome == "account_failed"
    assert "does not offer STARTTLS" in account.error


@pytest.mark.parametrize("kind", ["imap", "pop3"])
def test_untrusted_certificate_is_refused(scenario, tmp_path, kind):
    other_ca = make_test_ca(tmp_path / "other-ca", common_name="someone else")
    scenario.append(invoice_mail(1))
    builder = scenario.imap_account if kind == "imap" else scenario.pop3_account
    scenario.write_config(builder(ca_file=str(other_ca.ca_cert)))
    report = scenario.run()
    account = report.accounts[0]
    assert account.outcome == "account_failed"
    assert "certificate not trusted" in account.error
    assert scenario.doc2.uploads == []


def test_test_login_reports_each_account(scenario):
    scenario.write_config(
        scenario.imap_account(name="good-imap"),
        scenario.pop3_account(name="good-pop"),
        scenario.imap_account(name="bad-imap", password_secret="wrong-one"),
    )
    scenario.extra_env["WRONG_ONE"] = "definitely-wrong"
    result = scenario.cli("test-login")
    assert result.returncode == 1
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith(("ok", "FAIL"))}
    assert lines["good-imap"].startswith("ok")
    assert lines["good-pop"].startswith("ok")
    assert lines["bad-imap"].startswith("FAIL") and "login refused" in lines["bad-imap"]
    assert "definitely-wrong" not in result.stdout + result.stderr
    assert "folder 'INBOX'" in result.stdout

    only_good = scenario.cli("test-login", "good-imap", "good-pop")
    assert only_good.returncode == 0, only_good.stdout


def test_test_login_checks_the_doc2_key(scenario):
    scenario.write_config(scenario.imap_account())
    scenario.extra_env["DOC2_API_KEY"] = "stale-key"
    result = scenario.cli("test-login")
    assert result.returncode == 1
    assert "rejected the API key" in result.stdout
    assert "stale-key" not in result.stdout + result.stderr


def test_unknown_account_name_is_a_config_error(scenario):
    scenario.write_config(scenario.imap_account())
    result = scenario.cli("import", "nope")
    assert result.returncode == 2
    assert "no account named 'nope'" in result.stderr


def test_private_ca_from_requests_ca_bundle_when_no_ca_file(scenario):
    import yaml

    scenario.append(invoice_mail(1))
    account = scenario.imap_account()
    del account["ca_file"]
    config = {"doc2": {"base_url": scenario.doc2.url}, "accounts": [account]}
    scenario.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    untrusted = scenario.cli("import", "--json")
    assert untrusted.returncode == 1
    assert "certificate" in untrusted.stdout.lower()

    scenario.extra_env["REQUESTS_CA_BUNDLE"] = str(scenario.ca.ca_cert)
    trusted = scenario.cli("import", "--json")
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert len(scenario.doc2.uploads) == 1
