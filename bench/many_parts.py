"""Issue 9 #5: one message of many small parts that all carry one file name (a part-count bomb).

    .venv/bin/python bench/many_parts.py               # 4,000 parts called "invoice.pdf"
    .venv/bin/python bench/many_parts.py --parts 10000

Times :func:`ingest.mime.walk.extract_from_mime` on the message (what the pipeline does before it refuses a
message of more than MAX_DOCUMENTS_PER_MESSAGE documents) and prints how many documents were read and named.
Before the fix every part was read and named, and naming counted up from "(2)" for each duplicate: 4,000 parts
took 8.8 s. Now selection stops at the first document over the cap and naming is linear.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.config import ImapAccount
from ingest.mime.parts import MAX_DOCUMENTS_PER_MESSAGE
from ingest.mime.walk import extract_from_mime


def many_parts(count: int) -> bytes:
    head = (
        b"From: billing@supplier.example\r\nSubject: many parts\r\nMessage-ID: <many@supplier.example>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    )
    part = b'--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="invoice.pdf"\r\n\r\n'
    body = b"".join(part + b"%PDF-1.4 part " + str(n).encode() + b"\r\n" for n in range(count))
    return head + body + b"--b--\r\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=4000)
    args = parser.parse_args()
    account = ImapAccount.model_validate(
        {"name": "bench", "type": "imap", "host": "localhost", "username": "u", "password_secret": "pw"}
    )
    raw = many_parts(args.parts)
    started = time.perf_counter()
    extraction = extract_from_mime(raw, account)
    elapsed = time.perf_counter() - started
    print(f"parts: {args.parts}, message {len(raw) / 1e6:.1f} MB, cap {MAX_DOCUMENTS_PER_MESSAGE}")
    print(f"documents read and named: {len(extraction.documents)}, refused whole: {extraction.too_many}")
    print(f"extract_from_mime: {elapsed:.2f} s")


if __name__ == "__main__":
    main()
