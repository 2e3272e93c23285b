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
import functools
import hashlib
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    PYTHON,
    ROOT,
    Measured,
    load_average,
    machine_summary,
    make_pdf,
    mib,
    run_measured,
    spread,
    table,
)
from bench._graph import PROCESSED, GraphWorld
from bench._rounds import Run, before_arguments, before_label, paired, run_rounds, save_results

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

OURS = "ours"
NAIVE = "naive client"


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


DOC2_FIELDS: dict[str, object] = {}  # --max-concurrent-uploads: doc2.max_concurrent_uploads (default: the config's)


def run_ours(world: GraphWorld, work: Path, root: Path = ROOT) -> Measured:
    return world.run_ours(work, "ours", ingest_root=root, doc2=DOC2_FIELDS)


def check_imported(world: GraphWorld, digests: set[str]) -> tuple[str, dict[str, float]]:
    """Every PDF in DOC² once and every mail in Processed; the emulator's counts of the run."""
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
    graph = world.cloud.graph
    figures = {
        "Graph requests": len(graph.requests),
        "requests / mail": len(graph.requests) / expected,
        "in $batch": len(graph.batched),
        "peak concurrent": graph.peak_concurrency.get(world.cloud.mailbox.address.lower(), 0),
    }
    return f"{len(uploads)} PDFs in DOC² once each, {processed} in {PROCESSED}, {len(graph.requests)} requests", figures


# --- main --------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--pdf-kb", type=int, default=20, help="size of the one PDF in each mail (KB)")
    parser.add_argument("--graph-latency-ms", type=float, default=20.0, help="added to every Graph request")
    parser.add_argument("--doc2-latency-ms", type=float, default=100.0, help="added to every DOC² upload")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (3 for a median and a range)")
    parser.add_argument("--skip", action="append", default=[], choices=["naive", "ours"])
    parser.add_argument("--naive-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ingest-root", type=Path, help="run `python -m ingest` of another checkout as 'ours'")
    parser.add_argument("--max-concurrent-uploads", type=int, help="doc2.max_concurrent_uploads (default: unset)")
    before_arguments(parser)
    args = parser.parse_args()
    if args.naive_worker:
        return naive_import()
    if args.max_concurrent_uploads:
        DOC2_FIELDS["max_concurrent_uploads"] = args.max_concurrent_uploads
    root = (args.ingest_root or ROOT).resolve()
    if args.ingest_root:
        print(f"ours = python -m ingest in {root}")

    print(f"machine: {machine_summary()}")
    load = [load_average()]
    print(f"before the rounds: {load[0]}")
    count = args.messages
    pdfs = [(f"invoice-{n:06d}.pdf", make_pdf(n, args.pdf_kb * 1000)) for n in range(count)]
    digests = {hashlib.sha256(pdf).hexdigest() for _, pdf in pdfs}
    contenders: dict[str, Callable[[GraphWorld, Path], Measured]] = {
        NAIVE: run_naive,
        OURS: functools.partial(run_ours, root=root),
    }
    for before in args.before:
        print(f"{before_label(before)} = python -m ingest in {before.resolve()}")
        contenders[before_label(before)] = functools.partial(run_ours, root=before.resolve())
    contenders = {k: v for k, v in contenders.items() if k.split()[0] not in args.skip}
    print(
        f"mailbox: {count} mails with one {args.pdf_kb} KB PDF each ({mib(sum(len(p) for _, p in pdfs))}); Graph "
        f"+{args.graph_latency_ms:g} ms per request, DOC² +{args.doc2_latency_ms:g} ms per upload"
    )
    with GraphWorld(graph_latency=args.graph_latency_ms / 1000, doc2_latency=args.doc2_latency_ms / 1000) as world:
        results = run_rounds(
            {name: functools.partial(run, world) for name, run in contenders.items()},
            rounds=args.rounds,
            work=world.work,
            prepare=lambda: world.seed(pdfs),
            check=lambda _name, _dir, _measured: check_imported(world, digests),
            once=[NAIVE],  # ~3 minutes a run, and no code of ours in it
        )
    load.append(load_average())
    print(f"after the rounds: {load[1]}")
    title = f"Graph, {count:,} mails × {args.pdf_kb} KB, +{args.graph_latency_ms:g} ms a request"
    save_results(args.json_out, {title: results}, reference=OURS, load=load)
    print_tables(results, count)
    return 0


def print_tables(results: dict[str, list[Run]], count: int) -> None:
    ref = results.get(OURS, [])
    rows = []
    for name, runs in results.items():
        figures = runs[-1].extra
        rows.append(
            [
                name,
                len(runs),
                spread([r.measured.seconds for r in runs]),
                spread([r.measured.cpu_seconds for r in runs]),
                paired(runs, ref, lambda r: r.measured.seconds),
                paired(runs, ref, lambda r: r.measured.cpu_seconds),
                f"{count / statistics.median(r.measured.seconds for r in runs):.0f}",
                spread([r.extra["requests / mail"] for r in runs], 3),
                int(figures["in $batch"]),
                int(max(r.extra["peak concurrent"] for r in runs)),
                mib(max(r.measured.peak_rss for r in runs)),
            ]
        )
    print("\nmedian (range) of the rounds; / ours: paired by round")
    headers = ["contender", "runs", "seconds", "own CPU s", "time / ours", "CPU / ours", "mails/s"]
    print(table([*headers, "Graph requests / mail", "in $batch (last)", "peak concurrent", "peak RSS"], rows))
    print("(Graph requests: HTTP requests the emulator received; in $batch: the requests those batches held)")
    if OURS not in results:
        return
    per_message = max(r.extra["requests / mail"] for r in ref)
    verdict = "met" if per_message <= TARGET_REQUESTS_PER_MESSAGE else "MISSED"
    print(f"\ntarget <= {TARGET_REQUESTS_PER_MESSAGE} Graph requests per mail: {per_message:.3f} -> {verdict}")
    if NAIVE in results:
        naive = statistics.median(r.measured.seconds for r in results[NAIVE])
        speedup = naive / statistics.median(r.measured.seconds for r in ref)
        verdict = "met" if speedup >= TARGET_VS_NAIVE else "MISSED"
        print(f"target >= {TARGET_VS_NAIVE:.0f}x faster than the naive client: {speedup:.1f}x -> {verdict}")
    peak = max(r.extra["peak concurrent"] for r in ref)
    verdict = "met" if peak <= TARGET_CONCURRENCY else "MISSED"
    print(f"target <= {TARGET_CONCURRENCY} concurrent requests on the mailbox: peak {peak:.0f} -> {verdict}")


if __name__ == "__main__":
    sys.exit(main())
