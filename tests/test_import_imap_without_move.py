"""A server without MOVE: settle by COPY + \\Deleted + UID EXPUNGE of that UID only (UIDPLUS), so no other
message flagged \\Deleted by someone else is expunged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .mail import invoice_mail
from .support.dovecot import Dovecot
from .support.scenario import Scenario

NO_MOVE = "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS"


@pytest.fixture(scope="module")
def dovecot_without_move(tmp_path_factory, test_ca) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path_factory.mktemp("dovecot-nomove"), test_ca, extra_config=NO_MOVE)
    server.start()
    yield server
    server.close()


def test_copy_delete_expunge_only_touches_our_message(tmp_path, test_ca, dovecot_without_move, doc2_server):
    dovecot = dovecot_without_move
    dovecot.add_user("nomove@example.test", "pw-nomove")
    scenario = Scenario(tmp_path, test_ca, dovecot, doc2_server, "nomove@example.test", "pw-nomove")
    with dovecot.connect(scenario.user, scenario.password) as client:
        assert b"MOVE" not in client.capabilities()
    scenario.append(invoice_mail(1))
    someone_elses = dovecot.append(scenario.user, scenario.password, "INBOX", invoice_mail(2), flags=("\\Deleted",))
    scenario.write_config(scenario.imap_account(filters={"subject": "Invoice 1$"}))

    report = scenario.run()

    assert report.accounts[0].documents_uploaded == 1
    assert len(scenario.messages("Processed")) == 1
    remaining = dovecot.folder_messages(scenario.user, scenario.password, "INBOX")
    assert [uid for uid, _raw in remaining] == [someone_elses]  # still there: not expunged by us
