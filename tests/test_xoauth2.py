"""IMAP and POP3 with XOAUTH2 (Microsoft 365 with basic auth off): an app-only token from the Entra ID
emulator, presented to a real Dovecot whose oauth2 passdb asks a local introspection endpoint about it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from .mail import invoice_mail
from .support.dovecot import Dovecot
from .support.microsoft import MicrosoftCloud
from .support.scenario import Scenario

MAILBOX_USER = "scans@contoso.example"


class Introspection:
    """RFC 7662-style token introspection for Dovecot: active when Entra issued the token for Exchange Online."""

    def __init__(self, cloud: MicrosoftCloud) -> None:
        self.cloud = cloud
        self.asked = 0
        self.reject_all = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                token = parse_qs(self.rfile.read(length).decode()).get("token", [""])[0]
                outer.asked += 1
                try:
                    if outer.reject_all:
                        raise PermissionError("revoked")
                    outer.cloud.entra.validate(token, {"https://outlook.office365.com"})
                    answer = {"active": "true", "username": MAILBOX_USER}
                except Exception:
                    answer = {"active": "false"}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/introspect"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def cloud(test_ca) -> Iterator[MicrosoftCloud]:
    world = MicrosoftCloud.start(test_ca)
    yield world
    world.stop()


@pytest.fixture(scope="module")
def introspection(cloud) -> Iterator[Introspection]:
    server = Introspection(cloud)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oauth_dovecot(tmp_path_factory, test_ca, introspection) -> Iterator[Dovecot]:
    work = tmp_path_factory.mktemp("dovecot-oauth2")
    settings = work / "oauth2.conf.ext"
    settings.write_text(
        f"introspection_mode = post\nintrospection_url = {introspection.url}\nusername_attribute = username\n"
        "active_attribute = active\nactive_value = true\nforce_introspection = yes\n"
    )
    extra = (
        "auth_mechanisms = plain login xoauth2 oauthbearer\n"
        f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {settings}\n}}\n"
    )
    server = Dovecot(work, test_ca, extra_config=extra)
    server.start()
    server.add_user(MAILBOX_USER, "only-for-seeding")
    yield server
    server.close()


def oauth_scenario(kind, tmp_path, test_ca, cloud, dovecot, doc2_server, *, client_secret=None) -> Scenario:
    """An IMAP or POP3 account signing in with XOAUTH2, its app's secrets in the environment."""
    scenario = Scenario(tmp_path, test_ca, dovecot, doc2_server, MAILBOX_USER, "only-for-seeding")
    builder = scenario.imap_account if kind == "imap" else scenario.pop3_account
    scenario.write_config(
        builder(
            name=f"m365-{kind}",
            auth="xoauth2",
            password_secret=None,
            tenant_id=cloud.tenant,
            client_id_secret="graph-client-id",
            client_secret_secret="graph-client-secret",
        )
    )
    scenario.extra_env.update(
        AUTHORITY_HOST=cloud.entra.base_url,
        GRAPH_CLIENT_ID=cloud.app.client_id,
        GRAPH_CLIENT_SECRET=client_secret or cloud.client_secret,
    )
    return scenario


@pytest.mark.parametrize("kind", ["imap", "pop3"])
def test_xoauth2_login_and_import(kind, tmp_path, test_ca, cloud, introspection, oauth_dovecot, doc2_server):
    oauth_dovecot.reset_user(MAILBOX_USER)
    scenario = oauth_scenario(kind, tmp_path, test_ca, cloud, oauth_dovecot, doc2_server)
    scenario.append(invoice_mail(f"x{kind}"))
    asked_before = introspection.asked

    report = scenario.run()

    account = report.accounts[0]
    assert account.outcome == "ok", account.error
    assert [u.filename for u in scenario.doc2.uploads] == [f"invoice-x{kind}.pdf"]
    assert introspection.asked > asked_before  # Dovecot really checked our token


def test_xoauth2_with_a_wrong_client_secret_is_an_actionable_error(
    tmp_path, test_ca, cloud, oauth_dovecot, doc2_server
):
    scenario = oauth_scenario(
        "imap", tmp_path, test_ca, cloud, oauth_dovecot, doc2_server, client_secret="wrong-secret"
    )
    report = scenario.run()
    account = report.accounts[0]
    assert account.outcome == "account_failed"
    assert "AADSTS7000215" in account.error
    assert "wrong-secret" not in account.error


@pytest.mark.parametrize("kind", ["imap", "pop3"])
def test_token_refused_by_the_server_is_a_clear_login_error(
    kind, tmp_path, test_ca, cloud, introspection, oauth_dovecot, doc2_server
):
    scenario = oauth_scenario(kind, tmp_path, test_ca, cloud, oauth_dovecot, doc2_server)
    introspection.reject_all = True
    try:
        report = scenario.run()
    finally:
        introspection.reject_all = False
    account = report.accounts[0]
    assert account.outcome == "account_failed"
    assert "login refused" in account.error
