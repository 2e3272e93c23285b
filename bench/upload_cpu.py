"""Benchmark 10 (issue 14): the CPU one DOC² upload costs the client, ours against leaner clients.

    .venv/bin/python bench/upload_cpu.py                      # 300 uploads of a 200 KB PDF, 3 rounds each
    .venv/bin/python bench/upload_cpu.py --uploads 500 --kb 200

The lean DOC² endpoint runs in a process of its own (bench/_lean_doc2.py); this process uploads one document
after another, on one keep-alive connection, and measures its own CPU seconds (user + system,
``time.process_time``) per upload, which load on the machine barely changes (wall time does). Contenders:

* ``ingest.doc2.Doc2Client.upload``: ours, as the pipeline calls it (multipart form built by httpx, one body);
* plain httpx: ``httpx.Client.post`` of a form body built once beforehand (httpx's request machinery alone);
* http.client: ``HTTPSConnection.request`` of the same prebuilt body, headers and body in one ``sendall``
  (what a minimal keep-alive client costs: TLS, the socket, reading the answer).

The rounds alternate the contenders; the figure is the median of the rounds (range in brackets). The gap between
ours and http.client is what a leaner upload client could take out of an import run, per upload.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PYTHON, ROOT, Measured, load_average, machine_summary, make_pdf, spread, table
from bench._lean_doc2 import LeanDoc2Process
from bench._rounds import Run, before_arguments, before_label, paired, save_results
from tests.support.ca import make_test_ca

OURS, PLAIN_HTTPX, HTTP_CLIENT = "ours", "plain httpx (prebuilt form)", "http.client (one sendall)"
METADATA = {
    "custom_doc_id": "00000000-0000-0000-0000-000000000001",
    "email_from": "billing@supplier.example",
    "email_subject": "Invoice 000001",
    "email_received": "2026-03-02T09:30:00+00:00",
    "email_message_id": "<bench-000001@supplier.example>",
    "mailbox": "bench",
}


def _form(pdf: bytes) -> tuple[bytes, str]:
    boundary = "bench-boundary-0123456789"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="source"\r\n\r\nemail:bench\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{json.dumps(METADATA)}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="invoice.pdf"\r\n'
        f"Content-Type: application/pdf\r\n\r\n"
    ).encode()
    return head + pdf + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# Ours runs in a fresh interpreter whose working directory is the checkout measured (this one or a --before one):
# `python -c` puts that directory first on sys.path, so it imports that checkout's ingest.
_OURS = """
import json, os, ssl, sys, time
from ingest.doc2 import Doc2Client
from ingest.model import Document
try:
    from ingest.model import UploadMetadata
except ImportError:  # before the re-layout it lived in ingest.doc2
    from ingest.doc2 import UploadMetadata
env = os.environ
pdf = open(env["BENCH_PDF"], "rb").read()
document = Document("invoice.pdf", "application/pdf", pdf, key="0")
metadata = UploadMetadata(**json.loads(env["BENCH_METADATA"]))
context = ssl.create_default_context(cafile=env["BENCH_CA"])
with Doc2Client(env["BENCH_URL"], env["BENCH_KEY"], verify=context) as client:
    client.upload(document, "email:bench", metadata)  # connect outside the measure
    started = time.process_time()
    for _ in range(int(env["BENCH_COUNT"])):
        client.upload(document, "email:bench", metadata)
    print(time.process_time() - started)
"""


def ours(root: Path) -> Callable[[LeanDoc2Process, ssl.SSLContext, bytes, int], float]:
    """``Doc2Client.upload`` of the checkout in ``root``, as the pipeline calls it, in a process of its own."""

    def run(doc2: LeanDoc2Process, context: ssl.SSLContext, pdf: bytes, count: int) -> float:
        with tempfile.NamedTemporaryFile(suffix=".pdf") as file:
            file.write(pdf)
            file.flush()
            env = dict(
                os.environ,
                BENCH_PDF=file.name,
                BENCH_METADATA=json.dumps(METADATA),
                BENCH_CA=str(doc2.ca.ca_cert),
                BENCH_URL=doc2.url,
                BENCH_KEY=doc2.api_key,
                BENCH_COUNT=str(count),
            )
            done = subprocess.run([PYTHON, "-c", _OURS], cwd=root, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"ours in {root} failed:\n{done.stderr[-3000:]}")
        return float(done.stdout.split()[-1])

    return run


def plain_httpx(doc2: LeanDoc2Process, context: ssl.SSLContext, pdf: bytes, count: int) -> float:
    import httpx

    body, content_type = _form(pdf)
    headers = {"X-API-KEY": doc2.api_key, "Content-Type": content_type}
    with httpx.Client(base_url=doc2.url, verify=context, trust_env=False) as client:
        client.post("/document/process", content=body, headers=headers).raise_for_status()
        started = time.process_time()
        for _ in range(count):
            client.post("/document/process", content=body, headers=headers).raise_for_status()
        return time.process_time() - started


def plain_http_client(doc2: LeanDoc2Process, context: ssl.SSLContext, pdf: bytes, count: int) -> float:
    body, content_type = _form(pdf)
    host, port = doc2.url.removeprefix("https://").split(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context)
    head = (
        f"POST /document/process HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-KEY: {doc2.api_key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    def one() -> None:
        assert connection.sock is not None
        connection.sock.sendall(head + body)  # one write: headers and body together
        response = http.client.HTTPResponse(connection.sock)
        response.begin()
        response.read()
        if response.status != 200:
            raise SystemExit(f"http.client upload: HTTP {response.status}")

    connection.connect()
    one()
    started = time.process_time()
    for _ in range(count):
        one()
    seconds = time.process_time() - started
    connection.close()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--kb", type=int, default=200, help="size of the PDF uploaded (KB)")
    parser.add_argument("--rounds", type=int, default=3)
    before_arguments(parser)
    args = parser.parse_args()
    print(f"machine: {machine_summary()}")
    load = [load_average()]
    print(f"before the rounds: {load[0]}")
    contenders: dict[str, Callable[[LeanDoc2Process, ssl.SSLContext, bytes, int], float]] = {OURS: ours(ROOT)}
    for root in args.before:
        contenders[before_label(root)] = ours(root.resolve())
    contenders |= {PLAIN_HTTPX: plain_httpx, HTTP_CLIENT: plain_http_client}
    pdf = make_pdf(1, args.kb * 1000)
    results: dict[str, list[Run]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory(prefix="doc2-bench-") as work:
        ca = make_test_ca(Path(work) / "ca")
        doc2 = LeanDoc2Process(ca, Path(work) / "lean-doc2")
        doc2.start()
        try:
            context = ca.client_context()
            for number in range(args.rounds):
                for name, run in contenders.items():
                    doc2.clear()
                    ms = run(doc2, context, pdf, args.uploads) / args.uploads * 1000
                    cpu = ms * args.uploads / 1000  # the round's CPU seconds
                    results[name].append(Run(Measured(0.0, 0, 0, "", "", cpu), {"ms CPU / upload": ms}))
                    print(f"  round {number + 1}: {name:30} {ms:.3f} ms CPU per upload", flush=True)
        finally:
            doc2.stop()
    load.append(load_average())
    print(f"after the rounds: {load[1]}")
    save_results(args.json_out, {f"client CPU of one {args.kb} KB upload": results}, reference=OURS, load=load)
    floor = statistics.median(r.extra["ms CPU / upload"] for r in results[HTTP_CLIENT])
    rows = []
    for name, runs in results.items():
        values = [r.extra["ms CPU / upload"] for r in runs]
        over = statistics.median(values) - floor
        ratio = paired(runs, results[OURS], lambda r: r.measured.cpu_seconds)
        rows.append([name, spread(values, 3), ratio, f"{over:+.3f}", f"{over:.2f}"])
    print(f"\nclient CPU per upload of a {args.kb} KB PDF, {args.uploads} uploads a round, median (range):")
    headers = ["client", "ms CPU / upload", "/ ours (paired)", "over http.client, ms"]
    print(table([*headers, "over http.client, s / 1,000 uploads"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
