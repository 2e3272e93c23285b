"""Benchmark 2 of issue 6: Graph round trips and latency hiding, against a naive sequential client.

    .venv/bin/python bench/graph_roundtrips.py                 # 1,000 mails with one 20 KB PDF each
    .venv/bin/python bench/graph_roundtrips.py --messages 200 --skip naive

The local Graph emulator adds ``--graph-latency-ms`` (20) to every request and the local DOC² server
``--doc2-latency-ms`` (100) to every upload; the Inbox of one Graph mailbox holds ``--messages`` mails with one small
PDF each. The mailbox is re-seeded before each contender:

* a naive client (httpx, written plainly below): list the folder, then one message at a time: list its
  attachments, download each one, upload it to DOC², move the message;
* ours: ``python -m ingest import`` as a user runs it against GRAPH_ENDPOINT / AUTHORITY_HOST of the emulators
  (process start, msgraph-sdk's import and the sign-in included).

Both must leave every PDF in DOC² exactly once and every mail in Inbox/Processed; the benchmark checks that. The
emulator counts the HTTP requests (a ``$batch`` is one, whatever it holds) and the peak of concurrent requests on
the mailbox, a ``$batch`` counting as min(its requests, 4) of them, as Graph runs up to four of a batch at once.
Targets: at most 0.25 Graph requests per message, at least 10x faster than the naive client, never more than 4
concurrent requests on the mailbox.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PYTHON, ROOT, Measured, machine_summary, make_pdf, mib, run_measured, table
from bench._graph import PROCESSED, GraphWorld

TARGET_REQUESTS_PER_MESSAGE = 0.25
TARGET_VS_NAIVE = 10.0
TARGET_CONCURRENCY = 4


# --- the naive client (runs in a child process: python bench/graph_roundtrips.py --naive-worker) ----------------


def naive_import() -> int:
    """List the folder, then per message: its attachments, each one's bytes, upload, move. Plain, correct, slow."""
    import ssl
    import uuid
    from urllib.parse import quote

    import httpx

    env = os.environ
    context = ssl.create_default_context(cafile=env["NAIVE_CA"])
    answer = httpx.post(
        f"{env['NAIVE_AUTHORITY']}/{env['NAIVE_TENANT']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": env["NAIVE_CLIENT_ID"],
            "client_secret": env["NAIVE_CLIENT_SECRET"],
            "scope": f"{env['NAIVE_GRAPH']}/.default",
        },
        verify=context,
    )
    answer.raise_for_status()
    token = answer.json()["access_token"]
    user = f"{env['NAIVE_GRAPH']}/v1.0/users/{quote(env['NAIVE_MAILBOX'], safe='')}"
    uploaded = 0
    with (
        httpx.Client(base_url=user, verify=context, headers={"Authorization": f"Bearer {token}"}) as graph,
        httpx.Client(base_url=env["NAIVE_DOC2"], verify=context, headers={"X-API-KEY": env["NAIVE_KEY"]}) as doc2,
    ):
        found = graph.get("/mailFolders/inbox/childFolders", params={"$filter": "displayName eq 'Processed'"})
        found.raise_for_status()
        if found.json()["value"]:
            processed = found.json()["value"][0]["id"]
        else:
            created = graph.post("/mailFolders/inbox/childFolders", json={"displayName": "Processed"})
            created.raise_for_status()
            processed = created.json()["id"]

        messages = []
        page = graph.get(
            "/mailFolders/inbox/messages",
            params={
                "$select": "id,internetMessageId,subject,from,receivedDateTime",
                "$orderby": "receivedDateTime asc",
                "$top": "50",
            },
        )
        while True:
            page.raise_for_status()
            messages += page.json()["value"]
            if "@odata.nextLink" not in page.json():
                break
            page = graph.get(page.json()["@odata.nextLink"])

        for message in messages:
            attachments = graph.get(f"/messages/{message['id']}/attachments", params={"$select": "id,name,contentType"})
            attachments.raise_for_status()
            for number, attachment in enumerate(attachments.json()["value"]):
                content = graph.get(f"/messages/{message['id']}/attachments/{attachment['id']}/$value")
                content.raise_for_status()
                metadata = {
                    "custom_doc_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{message['internetMessageId']}/{number}")),
                    "email_from": message["from"]["emailAddress"]["address"],
                    "email_subject": message["subject"],
                    "email_received": message["receivedDateTime"],
                    "email_message_id": message["internetMessageId"],
                    "mailbox": "naive",
                }
                stored = doc2.post(
                    "/document/process",
                    data={"source": "email:naive", "metadata": json.dumps(metadata)},
                    files={"file": (attachment["name"], content.content, attachment["contentType"])},
                )
                stored.raise_for_status()
                uploaded += 1
            moved = graph.post(f"/messages/{message['id']}/move", json={"destinationId": processed})
            moved.raise_for_status()
    print(uploaded)
    return 0


# --- the contenders ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    measured: Measured
    requests: int  # HTTP requests Graph received ($batch: one)
    batched: int  # requests inside $batch requests
    uploads: int
    peak: int  # concurrent requests on the mailbox
    check: str
    note: str = ""


def run_naive(world: GraphWorld, work: Path) -> Measured:
    cloud = world.cloud
    env = dict(
        os.environ,
        NAIVE_CA=str(world.ca.ca_cert),
        NAIVE_AUTHORITY=cloud.entra.base_url,
        NAIVE_TENANT=cloud.tenant,
        NAIVE_CLIENT_ID=cloud.secrets["graph-client-id"],
        NAIVE_CLIENT_SECRET=cloud.secrets["graph-client-secret"],
        NAIVE_GRAPH=cloud.graph.endpoint,
        NAIVE_MAILBOX=cloud.mailbox.address,
        NAIVE_DOC2=world.doc2.url,
        NAIVE_KEY=world.doc2.api_key,
    )
    measured = run_measured([PYTHON, str(Path(__file__).resolve()), "--naive-worker"], env=env)
    if measured.returncode != 0:
        raise SystemExit(f"the naive client failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    return measured


INGEST_ROOT = ROOT  # --ingest-root: measure another checkout's ingest (a "before" figure)
DOC2_FIELDS: dict[str, object] = {}  # --max-concurrent-uploads: doc2.max_concurrent_uploads (default: the config's)


def run_ours(world: GraphWorld, work: Path) -> Measured:
    return world.run_ours(work, "ours", ingest_root=INGEST_ROOT, doc2=DOC2_FIELDS)


def check_imported(world: GraphWorld, digests: set[str]) -> str:
    uploads = world.doc2.uploads
    expected = len(digests)
    problems = []
    if len(uploads) != expected:
        problems.append(f"{len(uploads)} uploads, expected {expected}")
    if {hashlib.sha256(u.content).hexdigest() for u in uploads} != digests:
        problems.append("the uploaded PDFs differ from the seeded ones")
    if len({u.custom_doc_id for u in uploads}) != len(uploads):
        problems.append("a custom_doc_id was uploaded twice")
    inbox, processed = world.count("Inbox"), world.count(PROCESSED)
    if (inbox, processed) != (0, expected):
        problems.append(f"Inbox {inbox}, {PROCESSED} {processed}; expected 0 and {expected}")
    if problems:
        raise SystemExit("; ".join(problems))
    return f"{len(uploads)} PDFs in DOC² once each, {processed} mails in {PROCESSED}"


def measure(world: GraphWorld, pdfs: list[tuple[str, bytes]], digests: set[str], name: str, run: Runner) -> Outcome:
    world.seed(pdfs)
    work = world.work / name.split()[0]
    measured = run(world, work)
    graph = world.cloud.graph
    check = check_imported(world, digests)
    note = ""
    if name.startswith("ours"):
        report = json.loads(measured.stdout)
        note = f"in-process {report['duration_seconds']:.2f} s"
    return Outcome(
        measured,
        requests=len(graph.requests),
        batched=len(graph.batched),
        uploads=len(world.doc2.uploads),
        peak=graph.peak_concurrency.get(world.cloud.mailbox.address.lower(), 0),
        check=check,
        note=note,
    )


Runner = Callable[[GraphWorld, Path], Measured]


# --- main --------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--pdf-kb", type=int, default=20, help="size of the one PDF in each mail (KB)")
    parser.add_argument("--graph-latency-ms", type=float, default=20.0, help="added to every Graph request")
    parser.add_argument("--doc2-latency-ms", type=float, default=100.0, help="added to every DOC² upload")
    parser.add_argument("--skip", action="append", default=[], choices=["naive", "ours"])
    parser.add_argument("--naive-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ingest-root", type=Path, help="run `python -m ingest` of another checkout (before/after)")
    parser.add_argument("--max-concurrent-uploads", type=int, help="doc2.max_concurrent_uploads (default: unset)")
    args = parser.parse_args()
    if args.naive_worker:
        return naive_import()
    if args.max_concurrent_uploads:
        DOC2_FIELDS["max_concurrent_uploads"] = args.max_concurrent_uploads
    global INGEST_ROOT
    INGEST_ROOT = (args.ingest_root or ROOT).resolve()
    if args.ingest_root:
        print(f"ours = python -m ingest in {INGEST_ROOT}")

    print(f"machine: {machine_summary()}")
    count = args.messages
    pdfs = [(f"invoice-{n:06d}.pdf", make_pdf(n, args.pdf_kb * 1000)) for n in range(count)]
    digests = {hashlib.sha256(pdf).hexdigest() for _, pdf in pdfs}
    contenders: dict[str, Runner] = {"naive client": run_naive, "ours (python -m ingest import)": run_ours}
    contenders = {k: v for k, v in contenders.items() if k.split()[0] not in args.skip}
    print(
        f"mailbox: {count} mails with one {args.pdf_kb} KB PDF each ({mib(sum(len(p) for _, p in pdfs))}); Graph "
        f"+{args.graph_latency_ms:g} ms per request, DOC² +{args.doc2_latency_ms:g} ms per upload"
    )
    results: dict[str, Outcome] = {}
    with GraphWorld(graph_latency=args.graph_latency_ms / 1000, doc2_latency=args.doc2_latency_ms / 1000) as world:
        for name, run in contenders.items():
            started = time.perf_counter()
            outcome = measure(world, pdfs, digests, name, run)
            results[name] = outcome
            extra = f" ({outcome.note})" if outcome.note else ""
            print(
                f"  {name:32} {outcome.measured.seconds:7.2f} s{extra}  {outcome.check} "
                f"[{time.perf_counter() - started:.0f} s with seeding and checks]",
                flush=True,
            )

    ours_key = next((k for k in results if k.startswith("ours")), None)
    rows = []
    for name, outcome in results.items():
        seconds = outcome.measured.seconds
        rows.append(
            [
                name,
                f"{seconds:.2f}",
                f"{count / seconds:.0f}",
                outcome.requests,
                f"{outcome.requests / count:.3f}",
                outcome.batched,
                outcome.uploads,
                outcome.peak,
                f"{seconds / results[ours_key].measured.seconds:.2f}x" if ours_key else "-",
                mib(outcome.measured.peak_rss),
            ]
        )
    print()
    print(
        table(
            [
                "contender",
                "seconds",
                "mails/s",
                "Graph requests",
                "per mail",
                "in $batch",
                "DOC² uploads",
                "peak concurrent",
                "time / ours",
                "peak RSS",
            ],
            rows,
        )
    )
    print("(Graph requests: HTTP requests the emulator received; in $batch: the requests those batches held)")
    if ours_key:
        ours = results[ours_key]
        per_message = ours.requests / count
        verdict = "met" if per_message <= TARGET_REQUESTS_PER_MESSAGE else "MISSED"
        print(f"\ntarget <= {TARGET_REQUESTS_PER_MESSAGE} Graph requests per mail: {per_message:.3f} -> {verdict}")
        if "naive client" in results:
            speedup = results["naive client"].measured.seconds / ours.measured.seconds
            verdict = "met" if speedup >= TARGET_VS_NAIVE else "MISSED"
            print(f"target >= {TARGET_VS_NAIVE:.0f}x faster than the naive client: {speedup:.1f}x -> {verdict}")
        verdict = "met" if ours.peak <= TARGET_CONCURRENCY else "MISSED"
        print(f"target <= {TARGET_CONCURRENCY} concurrent requests on the mailbox: peak {ours.peak} -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
