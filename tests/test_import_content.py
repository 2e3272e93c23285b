"""What gets uploaded from real-world messages, end to end through Dovecot: nested mail, winmail.dat, encoded
file names, inline images, filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from . import samples
from .mail import invoice_mail, pdf_bytes


def uploaded_names(scenario) -> list[str]:
    return sorted(u.filename for u in scenario.doc2.uploads)


def test_forwarded_mail_is_imported_as_eml_and_its_pdf_too(scenario):
    scenario.append(samples.forwarded_message_with_pdf())
    scenario.write_config(scenario.imap_account())
    scenario.run()
    names = uploaded_names(scenario)
    assert any(n.endswith(".eml") for n in names), names
    assert any(n.endswith(".pdf") for n in names), names
    eml = next(u for u in scenario.doc2.uploads if u.filename.endswith(".eml"))
    assert eml.content_type == "message/rfc822"
    assert len(scenario.messages("Processed")) == 1


def test_winmail_dat_is_unpacked_into_its_files(scenario):
    scenario.append(samples.winmail_dat_message())
    scenario.write_config(scenario.imap_account())
    scenario.run()
    assert uploaded_names(scenario) == ["Rechnung März.pdf", "invoice.xml"]
    pdf = next(u for u in scenario.doc2.uploads if u.filename.endswith(".pdf"))
    assert pdf.content_type == "application/pdf" and pdf.content.startswith(b"%PDF-")


def test_encoded_file_names_arrive_decoded(scenario):
    scenario.append_many([samples.rfc2231_filename(), samples.rfc2047_filename(), samples.path_traversal_filename()])
    scenario.write_config(scenario.imap_account())
    scenario.run()
    names = uploaded_names(scenario)
    assert "Rechnung März.pdf" in names
    assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in names)
    assert len(names) == 3


def test_inline_images_skipped_unless_asked_for(scenario):
    scenario.append(samples.inline_logo_and_signature())
    scenario.write_config(scenario.imap_account())
    report = scenario.run()
    assert all(not u.content_type.startswith("image/") for u in scenario.doc2.uploads)
    assert report.accounts[0].documents_skipped >= 1

    scenario.append(samples.inline_logo_and_signature())
    scenario.write_config(scenario.imap_account(include_inline=True))
    scenario.doc2.clear()
    scenario.run()
    assert any(u.content_type.startswith("image/") for u in scenario.doc2.uploads)


def test_pdf_sent_as_octet_stream_is_uploaded_as_pdf(scenario):
    scenario.append(samples.pdf_as_octet_stream_without_extension())
    scenario.write_config(scenario.imap_account())
    scenario.run()
    (upload,) = scenario.doc2.uploads
    assert upload.content_type == "application/pdf"
    assert upload.filename.endswith(".pdf")


def test_whole_message_as_eml(scenario):
    raw = invoice_mail(5)
    scenario.append(raw)
    scenario.write_config(scenario.imap_account(**{"import": "both"}))
    scenario.run()
    names = uploaded_names(scenario)
    assert names == ["Invoice 5.eml", "invoice-5.pdf"]
    eml = next(u for u in scenario.doc2.uploads if u.filename.endswith(".eml"))
    assert eml.content == raw


def test_filters(scenario):
    old = datetime.now(UTC) - timedelta(days=40)
    scenario.append_many(
        [
            invoice_mail(1),  # passes
            invoice_mail(2, sender="spam@elsewhere.example"),  # sender not allowed: left in the inbox
            invoice_mail(3, subject="Newsletter"),  # subject does not match: left in the inbox
            invoice_mail(4, date=old),  # too old: left in the inbox
            invoice_mail(
                5,
                attachments=[
                    ("signature-logo.png", samples.make_png(), "image/png"),
                    ("terms.docx", b"PK\x03\x04 not really", "application/octet-stream"),
                ],
            ),  # no document left after the attachment filters: processed, nothing uploaded
            invoice_mail(6, attachments=[("big.pdf", pdf_bytes("x") + b"0" * 300_000, "application/pdf")]),
        ]
    )
    scenario.write_config(
        scenario.imap_account(
            filters={
                "from": ["*@SUPPLIER.example"],
                "subject": "(?i)invoice|rechnung",
                "attachment_names": ["*.pdf", "*.png"],
                "exclude_attachment_names": ["signature*.png"],
                "max_age_days": 30,
                "max_attachment_mb": 0.25,
            }
        )
    )
    report = scenario.run()
    account = report.accounts[0]
    assert uploaded_names(scenario) == ["invoice-1.pdf"]
    assert account.messages_skipped_by_filter == 3
    assert account.messages_without_documents == 2
    assert account.messages_imported == 1
    assert len(scenario.messages("INBOX")) == 3
    assert len(scenario.messages("Processed")) == 3


def test_unnamed_xrechnung_and_csv_are_imported_and_the_footer_is_reported(scenario):
    scenario.append(samples.unnamed_text_documents())
    scenario.write_config(scenario.imap_account())
    report = scenario.run()
    account = report.accounts[0]
    uploads = {u.filename: u.content for u in scenario.doc2.uploads}
    assert sorted(uploads) == ["attachment.csv", "attachment.xml"]
    assert uploads["attachment.xml"] == samples.XRECHNUNG
    assert account.messages_imported == 1 and account.messages_without_documents == 0
    assert [(s.part, s.reason) for s in account.skipped] == [
        ("part 4", "text/plain without a file name: text of the message")
    ]
    assert len(scenario.messages("Processed")) == 1
