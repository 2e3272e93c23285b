"""What a sender controls must not stop an account at the state store: a 40,000-character Message-ID is the base of
the message's identity, and Table Storage refuses a string property over 32K characters. Against Azurite (which
enforces that limit), the real Dovecot and the local DOC² server."""

from __future__ import annotations

import re

from ingest.mime.headers import message_identity, parse_headers
from ingest.state.factory import open_state_store
from tests.mail import invoice_mail
from tests.support.azurite import unique_name


def _with_message_id(raw: bytes, message_id: str) -> bytes:
    return re.sub(rb"(?m)^Message-ID: [^\r\n]*", f"Message-ID: {message_id}".encode(), raw, count=1)


def test_a_40k_message_id_is_imported_once_with_the_table_state_store(scenario, azurite):
    state_url = azurite.state_url(unique_name("limits"))
    scenario.extra_env["INGEST_STATE_URL"] = state_url
    long_id = "<" + "x" * 40_000 + "@supplier.example>"
    hostile = _with_message_id(invoice_mail(1), long_id)
    identity = message_identity(parse_headers(hostile), hostile)
    assert len(identity) > 40_000
    scenario.append_many([invoice_mail(0), hostile, invoice_mail(2)])
    scenario.write_config(scenario.imap_account())

    first = scenario.run().accounts[0]

    assert first.outcome == "ok", first.error
    assert (first.messages_imported, first.documents_uploaded, first.messages_failed) == (3, 3, 0)
    assert scenario.messages("INBOX") == [] and len(scenario.messages("Processed")) == 3

    # The record is there and is found again: the same mail arriving once more uploads nothing.
    scenario.append(hostile)
    again = scenario.run().accounts[0]
    assert (again.documents_uploaded, again.documents_already_in_doc2) == (0, 1)
    assert len(scenario.doc2.uploads) == 3
    store = open_state_store(state_url)
    try:
        assert len(store.uploaded("mail", identity)) == 1
    finally:
        store.close()
