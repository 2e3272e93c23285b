"""Mail bodies for the body_to_pdf tests: German, Japanese, a table-heavy invoice, a 2 MB HTML, and one that
points at a server for everything it could load."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

DATE = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

GERMAN_HTML = """<html><body><p>Sehr geehrte Damen und Herren,</p>
<p>anbei unsere Rechnung für Größe XL. Grüße aus Köln, Müller &amp; Söhne — Straße 5, 50667 Köln.</p>
<p>Betrag: 1.234,56 €</p></body></html>"""

JAPANESE_HTML = """<html><body><p>株式会社サンプル 御中</p>
<p>請求書を送付いたします。ご確認のほど、よろしくお願いいたします。</p>
<p>合計金額：１２，３４５円（税込）</p></body></html>"""


def invoice_html(rows: int = 25) -> str:
    """A supplier's invoice as HTML mail: a layout table holding a header table, the item table and totals."""
    items = "".join(
        f"<tr><td>{n}</td><td>Artikel {n:03d} Schraube M{n % 12 + 3}</td><td>{n * 2}</td>"
        f"<td>{n * 1.25:.2f} €</td><td>{n * n * 2.5:.2f} €</td></tr>"
        for n in range(1, rows + 1)
    )
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><style>td {{ padding: 4px }}</style></head>
<body style="font-family: Arial"><table width="100%" cellpadding="0"><tr><td>
  <table><tr><td><b>Supplier X GmbH</b></td><td>Rechnung Nr. RE-2024-0815</td></tr>
         <tr><td>Industriestraße 1, 70173 Stuttgart</td><td>Datum: 01.05.2024</td></tr></table>
</td></tr><tr><td>
  <table border="1"><thead><tr><th>Pos</th><th>Bezeichnung</th><th>Menge</th><th>Einzelpreis</th><th>Gesamt</th></tr>
  </thead><tbody>{items}</tbody></table>
</td></tr><tr><td><p>Summe netto: 9.876,54 €<br>USt 19 %: 1.876,54 €<br><b>Gesamtbetrag: 11.753,08 €</b></p>
<p>Bestellnummer: 4711-0815</p></td></tr></table></body></html>"""


def big_html(size: int = 2 * 1024 * 1024) -> str:
    """A 2 MB HTML mail, most of it inline styles, as newsletters and exported reports are; its text ends with a
    marker."""
    row = (
        '<tr><td style="font-family: Arial, Helvetica, sans-serif; font-size: 12px; color: #333333; '
        'padding: 4px 8px 4px 8px; border-bottom: 1px solid #eeeeee; background-color: #fafafa">Zeile {n}: '
        "Lieferung geprüft</td></tr>\n"
    )
    rows, total, n = [], 0, 0
    while total < size:
        piece = row.format(n=n)
        rows.append(piece)
        total += len(piece)
        n += 1
    return f"<html><body><p>BEGIN-OF-BIG-MAIL</p><table>{''.join(rows)}</table><p>END-OF-BIG-MAIL</p></body></html>"


def hostile_html(base: str) -> str:
    """Everything a mail can point at on ``base`` (a local server that records requests)."""
    return f"""<html><head>
<link rel="stylesheet" href="{base}/style.css"><script src="{base}/script.js"></script>
<style>@import url({base}/import.css); body {{ background: url({base}/bg.png) }}</style>
<meta http-equiv="refresh" content="0; url={base}/refresh"></head>
<body background="{base}/body-bg.png"><p>Tracking test: Rechnungstext bleibt.</p>
<img src="{base}/pixel.png" alt="tracking pixel" width="1" height="1">
<img srcset="{base}/srcset.png 2x" src="{base}/logo.png" alt="Logo">
<iframe src="{base}/frame.html"></iframe><object data="{base}/object.swf"></object>
<video src="{base}/video.mp4" poster="{base}/poster.png"></video>
<table background="{base}/table-bg.png"><tr><td style="background-image: url({base}/cell.png)">Zelle</td></tr></table>
<script>document.write('<img src="{base}/written.png">'); fetch('{base}/fetch');</script>
<a href="{base}/link">Link text</a></body></html>"""


def html_mail(
    html: str,
    *,
    subject: str = "Rechnung RE-2024-0815",
    text: str | None = None,
    images: dict[str, bytes] | None = None,
    attachments: list[tuple[str, bytes]] | None = None,
    charset: str = "utf-8",
) -> bytes:
    message = EmailMessage()
    message["From"] = "Supplier X <billing@supplier-x.example>"
    message["To"] = "ap@contoso.com"
    message["Subject"] = subject
    message["Date"] = format_datetime(DATE)
    message["Message-ID"] = make_msgid("body", domain="supplier-x.example")
    if text is not None:
        message.set_content(text)
        message.add_alternative(html, subtype="html", charset=charset)
        html_part = message.get_payload()[1]  # type: ignore[index]
    else:
        message.set_content(html, subtype="html", charset=charset)
        html_part = message
    for cid, data in (images or {}).items():
        html_part.add_related(data, maintype="image", subtype="png", cid=f"<{cid}>")
    for name, content in attachments or []:
        message.add_attachment(content, maintype="application", subtype="pdf", filename=name)
    return message.as_bytes(policy=SMTP)


def png(width: int = 120, height: int = 40) -> bytes:
    from PIL import Image  # Pillow comes with fpdf2

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()
