"""max_attachment_mb is enforced before the attachment is read: over IMAP an oversized part never leaves the
server (BODYSTRUCTURE tells its size; the rest of the message is fetched section by section)."""

from __future__ import annotations

import os
import re

import pytest

from ingest.config import ImapAccount
from ingest.mailbox.imap import ImapMailbox
from ingest.mime.walk import extract_from_mime
from tests import samples
from tests.hostile.corpus import TEXT, attachment, cases, multipart
from tests.mail import invoice_mail, pdf_bytes

_LOGGED_OUT = re.compile(r"imap\((?P<user>[^)]+)\).*Logged out in=(?P<sent>\d+) out=(?P<received>\d+)")


def _bytes_sent_to(scenario, since: int) -> int:
    """What Dovecot sent to our user over IMAP in the sessions logged after character ``since`` of its log."""
    total = 0
    for match in _LOGGED_OUT.finditer(scenario.dovecot.log_text()[since:]):
        if match["user"] == scenario.user:
            total += int(match["received"])
    return total


def test_an_oversized_attachment_never_leaves_the_imap_server(scenario):
    big = b"%PDF-1.4\n" + os.urandom(30 * 1024 * 1024)
    raw = invoice_mail(
        1,
        attachments=[
            ("huge-scan.pdf", big, "application/pdf"),
            ("invoice-1.pdf", pdf_bytes("Invoice 1"), "application/pdf"),
        ],
    )
    scenario.append_many([raw, invoice_mail(2)])
    scenario.write_config(scenario.imap_account(filters={"max_attachment_mb": 5}))
    log_start = len(scenario.dovecot.log_text())

    report = scenario.run()

    sent = _bytes_sent_to(scenario, log_start)
    account = report.accounts[0]
    assert (account.outcome, account.messages_imported, account.documents_skipped) == ("ok", 2, 1)
    assert sorted(upload.filename for upload in scenario.doc2.uploads) == ["invoice-1.pdf", "invoice-2.pdf"]
    assert len(scenario.messages("Processed")) == 2
    print(f"\nIMAP bytes sent by Dovecot for a 41 MB message with a 30 MB attachment over a 5 MB limit: {sent}")
    assert 0 < sent < 1024 * 1024, f"{sent} bytes fetched: the attachment was read"


def test_the_whole_message_as_eml_is_fetched_whole(scenario):
    """import: message|both uploads the mail as it came: the attachment filters do not apply to it."""
    raw = invoice_mail(1, attachments=[("big.pdf", b"%PDF-1.4\n" + os.urandom(2 * 1024 * 1024), "application/pdf")])
    scenario.append(raw)
    scenario.write_config(scenario.imap_account(filters={"max_attachment_mb": 1}, **{"import": "both"}))
    scenario.run()
    uploads = {upload.filename: upload for upload in scenario.doc2.uploads}
    assert [name for name in uploads if name.endswith(".eml")] and "big.pdf" not in uploads
    assert max(len(upload.content) for upload in uploads.values()) > 2 * 1024 * 1024


def _equivalence_corpus() -> list[bytes]:
    sampled = [build() for build in samples.ALL_SAMPLES.values()] + [samples.nested_forwards(3)]
    hostile = [case.raw for case in cases(with_big=False) if case.raw and b"five-thousand" not in case.raw[:2000]]
    deep = multipart("deep", [TEXT, b"Content-Type: message/rfc822\r\n\r\n" + samples.forwarded_message_with_pdf()])
    single = b"Subject: just a pdf\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    single += b"JVBERi0xLjQK" * 400 + b"\r\n"
    return [*sampled, *hostile, deep, single, multipart("two", [TEXT, attachment(), attachment(b"b.pdf")])]


@pytest.mark.parametrize(("limit_mb", "at_least"), [(0.0001, 60), (0.0005, 5)])
def test_leaving_parts_on_the_server_changes_no_document(scenario, limit_mb, at_least):
    """Against Dovecot's real BODYSTRUCTURE, for every sample and hostile message: the documents read section by
    section are exactly those of the whole message under the same limit (names, keys, bytes)."""
    corpus = _equivalence_corpus()
    scenario.append_many(corpus)
    config = scenario.write_config(scenario.imap_account(filters={"max_attachment_mb": limit_mb}))
    account = config.accounts[0]
    assert isinstance(account, ImapAccount)
    whole = dict(scenario.dovecot.folder_messages(scenario.user, scenario.password, "INBOX"))
    partial_reads = 0
    with ImapMailbox(account, _secrets(scenario)) as mailbox:
        for ref in mailbox.list_messages():
            item = mailbox.read(ref)
            partial_reads += bool(item.omitted_sizes)
            got = [(d.filename, d.key, d.content) for d in item.extract(account).documents]
            expected = [
                (d.filename, d.key, d.content) for d in extract_from_mime(whole[int(ref.ref)], account).documents
            ]
            assert got == expected, f"UID {ref.ref}"
    print(f"\n{len(corpus)} messages, {partial_reads} read without their oversized parts (limit {limit_mb} MB)")
    assert partial_reads >= at_least


def _secrets(scenario):
    return lambda name: {"mail-password": scenario.password}[name]
