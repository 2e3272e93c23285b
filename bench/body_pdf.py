"""body_to_pdf: how long rendering a mail body to PDF takes, and how big the PDF is (issue 13).

    .venv/bin/python bench/body_pdf.py            # each sample 5 times, median
    .venv/bin/python bench/body_pdf.py --runs 9

Samples from tests/bodies.py: a German letter, a Japanese one, a table-heavy invoice (25 item rows, laid out as
HTML), and a 2 MB HTML mail (rendered as plain text: over the layout limit). Each render is a fresh PDF with its
font loaded, as in the pipeline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine_summary, table
from ingest.bodypdf import body_document
from ingest.mime.item import MimeMailItem
from tests.bodies import GERMAN_HTML, JAPANESE_HTML, big_html, html_mail, invoice_html


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    samples = {
        "German letter": html_mail(GERMAN_HTML),
        "Japanese letter": html_mail(JAPANESE_HTML, charset="iso-2022-jp"),
        "invoice, 25 rows (layout)": html_mail(invoice_html(rows=25)),
        "2 MB HTML (plain text)": html_mail(big_html()),
    }
    rows = []
    for name, raw in samples.items():
        item = MimeMailItem(raw)
        times, size = [], 0
        for _ in range(args.runs):
            started = time.perf_counter()
            document = body_document(item.facts().body, item.headers)
            times.append(time.perf_counter() - started)
            size = document.size if document else 0
        rows.append((name, f"{len(raw) / 1024:.0f} KiB", f"{statistics.median(times):.2f}", f"{size / 1024:.0f} KiB"))
    print(machine_summary())
    print(table(["sample", "mail", "render s (median)", "PDF"], rows))


if __name__ == "__main__":
    main()
