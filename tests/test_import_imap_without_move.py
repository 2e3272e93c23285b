"""A server without MOVE: settle by COPY + \\Deleted + UID EXPUNGE of that UID only (UIDPLUS), so no other
message flagged \\Deleted by someone else is expunged. Runs on each kind of IMAP server with MOVE turned off."""

from __future__ import annotations

import pytest

from .mail import invoice_mail
from .support.cyrus import Cyrus
from .support.dovecot import Dovecot
from .support.mailserver import MailServer
from .support.scenario import Scenario

# Without NAMESPACE too on the default layout: the separator then comes from LIST alone. A hosting-style server
# needs NAMESPACE to say where its folders live (and Courier, cPanel and Plesk all offer it).
NO_MOVE = "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS"


@pytest.fixture(scope="module", params=["default", "hosting", "cyrus"])
def server_without_move(request, tmp_path_factory, test_ca):
    if request.param == "cyrus":
        with Cyrus(test_ca, suppress_capabilities="MOVE") as cyrus:
            yield cyrus
        return
    server = Dovecot(
        tmp_path_factory.mktemp(f"dovecot-nomove-{request.param}"),
        test_ca,
        extra_config=NO_MOVE + (" NAMESPACE" if request.param == "hosting" else ""),
        layout=request.param,
    )
    server.start()
    yield server
    server.close()


def test_copy_delete_expunge_only_touches_our_message(tmp_path, test_ca, server_without_move: MailServer, doc2_server):
    server = server_without_move
    server.add_user("nomove", "pw-nomove")
    scenario = Scenario(tmp_path, test_ca, server, doc2_server, "nomove", "pw-nomove")
    with server.connect(scenario.user, scenario.password) as client:
        assert b"MOVE" not in client.capabilities()
    scenario.append(invoice_mail(1))
    someone_elses = server.append(scenario.user, scenario.password, "INBOX", invoice_mail(2), flags=("\\Deleted",))
    scenario.write_config(
        scenario.imap_account(processed_folder="Archiv/Rechnungen", filters={"subject": "Invoice 1$"})
    )

    report = scenario.run()

    assert report.accounts[0].documents_uploaded == 1
    assert len(scenario.messages("Archiv/Rechnungen")) == 1
    remaining = server.folder_messages(scenario.user, scenario.password, "INBOX")
    assert [uid for uid, _raw in remaining] == [someone_elses]  # still there: not expunged by us
