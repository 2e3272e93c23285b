"""Benchmark 3 of issue 6: memory for one message with a 100 MB attachment, over IMAP and over Graph.

    .venv/bin/python bench/memory.py                  # a 100 MB PDF in one mail, over IMAPS and over Graph
    .venv/bin/python bench/memory.py --attachment-mb 20 --only graph

IMAP: a loopback Dovecot holds one mail whose attachment is ``--attachment-mb`` MB of incompressible bytes (base64
in the mail: 1.37 times that). Graph: the local Graph emulator holds one message with that file attachment (its
bytes streamed from ``/attachments/{id}/$value``). For each, ``python -m ingest import`` runs twice, each time
measuring its own peak RSS (VmHWM): once on the empty mailbox (the idle process: imports, sign-in, an empty
listing) and once on the mail. The figure is the difference; the target is at most 1.5 times the attachment. For
reference the naive loops of bench/imap_throughput.py (fetch whole, parse, upload from memory) and
bench/graph_roundtrips.py (download whole, upload from memory) run on the same mail.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    PYTHON,
    ROOT,
    USER,
    MailWorld,
    Measured,
    machine_summary,
    make_message,
    make_pdf,
    mib,
    run_measured,
    table,
)
from bench._graph import PROCESSED, GraphWorld
from bench.graph_roundtrips import run_naive as run_naive_graph
from bench.imap_throughput import run_naive

TARGET = 1.5  # peak RSS above the idle process, in attachments
INGEST_ROOT = ROOT  # --ingest-root: measure another checkout's ingest (a "before" figure)


def run_ours(world: MailWorld, work: Path, label: str) -> Measured:
    work.mkdir()
    config = world.write_accounts(work / "accounts.yaml")
    env = world.ingest_env(config, work / "state.sqlite3")
    measured = run_measured([PYTHON, "-m", "ingest", "import", "--json", "--quiet"], env=env, cwd=INGEST_ROOT)
    if measured.returncode != 0:
        raise SystemExit(
            f"python -m ingest import ({label}) failed ({measured.returncode}):\n{measured.stderr[-3000:]}"
        )
    return measured


def check(world: MailWorld, digest: str, size: int) -> str:
    uploads = world.doc2.uploads
    if len(uploads) != 1 or hashlib.sha256(uploads[0].content).hexdigest() != digest:
        raise SystemExit(f"DOC² received {len(uploads)} uploads, expected the one {size}-byte PDF intact")
    if world.count("Processed") != 1:
        raise SystemExit("the mail was not moved to Processed")
    return "PDF intact in DOC², mail in Processed"


HEADERS = ["process", "idle peak RSS", "peak RSS", "above idle", "/ attachment", "seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attachment-mb", type=int, default=100)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--only", choices=["imap", "graph"], help="one half only")
    parser.add_argument("--ingest-root", type=Path, help="run `python -m ingest` of another checkout (before/after)")
    args = parser.parse_args()
    global INGEST_ROOT
    INGEST_ROOT = (args.ingest_root or ROOT).resolve()
    if args.ingest_root:
        print(f"ours = python -m ingest in {INGEST_ROOT}")
    size = args.attachment_mb * 1000 * 1000
    print(f"machine: {machine_summary()}")
    verdicts = []
    if args.only in (None, "imap"):
        verdicts.append(imap_half(size, skip_naive=args.skip_naive))
    if args.only in (None, "graph"):
        verdicts.append(graph_half(size, skip_naive=args.skip_naive))
    print()
    print("\n".join(verdicts))
    return 0


def imap_half(size: int, *, skip_naive: bool) -> str:
    print("\nIMAP")
    with MailWorld() as world:
        idle = run_ours(world, world.work / "idle", "empty mailbox")
        if json.loads(idle.stdout)["totals"]["messages_seen"] != 0:
            raise SystemExit("the idle run found mail")

        pdf = make_pdf(7, size)
        digest = hashlib.sha256(pdf).hexdigest()
        raw = make_message(1, pdf, "big-scan.pdf")
        del pdf
        mail_size = len(raw)
        seconds = world.seed([raw])
        del raw
        print(f"mailbox: one mail of {mib(mail_size)} holding a {mib(size)} PDF (APPEND {seconds:.1f} s) for {USER}")

        rows = []
        world.reseed()
        big = run_ours(world, world.work / "big", "one big mail")
        result = check(world, digest, size)
        above = big.peak_rss - idle.peak_rss
        rows.append(_row("ours (python -m ingest import)", idle, big, size))
        print(f"  ours: {big.seconds:.1f} s, {result}")
        if not skip_naive:
            world.reseed()
            naive = run_naive(world, world.work)
            result = check(world, digest, size)
            rows.append(_row("naive loop (reference)", idle, naive, size))
            print(f"  naive loop: {naive.seconds:.1f} s, {result}")

    print()
    print(table(HEADERS, rows))
    print("(idle: our CLI on the empty mailbox; the naive loop is set against the same idle figure)")
    return _verdict("IMAP", above, size)


def _row(label: str, idle: Measured, run: Measured, size: int) -> list[str]:
    """One table row: peak RSS idle and with the big message, the difference, its ratio to the attachment."""
    above = run.peak_rss - idle.peak_rss
    return [label, mib(idle.peak_rss), mib(run.peak_rss), mib(above), f"{above / size:.2f}x", f"{run.seconds:.1f}"]


def graph_half(size: int, *, skip_naive: bool) -> str:
    """The same over Graph: the local Entra ID and Graph emulators, one message with one file attachment."""
    print("\nGraph")
    with GraphWorld() as world:
        world.seed([])
        idle = world.run_ours(world.work / "idle", "empty mailbox", ingest_root=INGEST_ROOT)
        if json.loads(idle.stdout)["totals"]["messages_seen"] != 0:
            raise SystemExit("the idle run found mail")

        pdf = make_pdf(7, size)
        digest = hashlib.sha256(pdf).hexdigest()
        world.seed([("big-scan.pdf", pdf)])
        del pdf
        print(f"mailbox: one Graph message with a {mib(size)} PDF file attachment")

        rows = []
        big = world.run_ours(world.work / "big", "one big message", ingest_root=INGEST_ROOT)
        result = graph_check(world, digest, size)
        above = big.peak_rss - idle.peak_rss
        rows.append(_row("ours (python -m ingest import)", idle, big, size))
        print(f"  ours: {big.seconds:.1f} s, {result}")
        if not skip_naive:
            pdf = make_pdf(7, size)
            world.seed([("big-scan.pdf", pdf)])
            del pdf
            naive = run_naive_graph(world, world.work / "naive")
            result = graph_check(world, digest, size)
            rows.append(_row("naive client (reference)", idle, naive, size))
            print(f"  naive client: {naive.seconds:.1f} s, {result}")
    print()
    print(table(HEADERS, rows))
    print("(idle: our CLI on the empty Graph mailbox; the naive client is set against the same idle figure)")
    return _verdict("Graph", above, size)


def graph_check(world: GraphWorld, digest: str, size: int) -> str:
    uploads = world.doc2.uploads
    if len(uploads) != 1 or hashlib.sha256(uploads[0].content).hexdigest() != digest:
        raise SystemExit(f"DOC² received {len(uploads)} uploads, expected the one {size}-byte PDF intact")
    if world.count(PROCESSED) != 1:
        raise SystemExit(f"the message was not moved to {PROCESSED}")
    return f"PDF intact in DOC², message in {PROCESSED}"


def _verdict(half: str, above: int, size: int) -> str:
    verdict = "met" if above <= TARGET * size else "MISSED"
    target = f"<= {TARGET}x the attachment ({mib(TARGET * size)})"
    return f"{half}: target peak RSS above idle {target}: {mib(above)} -> {verdict}"


if __name__ == "__main__":
    sys.exit(main())
