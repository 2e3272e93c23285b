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
import functools
import hashlib
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    PYTHON,
    ROOT,
    USER,
    MailWorld,
    Measured,
    load_average,
    machine_summary,
    make_message,
    make_pdf,
    mib,
    run_measured,
    spread,
    table,
)
from bench._graph import PROCESSED, GraphWorld
from bench._rounds import Contender, Run, before_arguments, before_label, run_rounds, save_results
from bench.graph_roundtrips import run_naive as run_naive_graph
from bench.imap_throughput import run_naive

TARGET = 1.5  # peak RSS above the idle process, in attachments
OURS = "ours"


def run_ours(world: MailWorld, work: Path, root: Path = ROOT) -> Measured:
    work.mkdir(parents=True, exist_ok=True)
    config = world.write_accounts(work / "accounts.yaml")
    env = world.ingest_env(config, work / "state.sqlite3")
    measured = run_measured([PYTHON, "-m", "ingest", "import", "--json", "--quiet"], env=env, cwd=root)
    if measured.returncode != 0:
        raise SystemExit(f"python -m ingest import ({root}) failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    return measured


def check(world: MailWorld, digest: str, size: int) -> str:
    uploads = world.doc2.uploads
    if len(uploads) != 1 or hashlib.sha256(uploads[0].content).hexdigest() != digest:
        raise SystemExit(f"DOC² received {len(uploads)} uploads, expected the one {size}-byte PDF intact")
    if world.count("Processed") != 1:
        raise SystemExit("the mail was not moved to Processed")
    return "PDF intact in DOC², mail in Processed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attachment-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each contender (idle and with the mail)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--only", choices=["imap", "graph"], help="one half only")
    parser.add_argument("--ingest-root", type=Path, help="run `python -m ingest` of another checkout as 'ours'")
    before_arguments(parser)
    args = parser.parse_args()
    roots = {OURS: (args.ingest_root or ROOT).resolve()} | {before_label(r): r.resolve() for r in args.before}
    for name, root in roots.items():
        print(f"{name} = python -m ingest in {root}")
    size = args.attachment_mb * 1000 * 1000
    print(f"machine: {machine_summary()}")
    load = [load_average()]
    print(f"before the rounds: {load[0]}")
    verdicts, tables = [], {}
    halves = {"IMAP": imap_half, "Graph": graph_half}
    for half, measure in halves.items():
        if args.only in (None, half.lower()):
            print(f"\n{half}")
            results = measure(size, roots, rounds=args.rounds, skip_naive=args.skip_naive)
            print_table(results, size)
            verdicts.append(_verdict(half, results, size))
            tables[f"memory, {half}, one {args.attachment_mb} MB attachment"] = results
    load.append(load_average())
    print(f"after the rounds: {load[1]}")
    save_results(args.json_out, tables, reference=OURS, load=load)
    print()
    print("\n".join(verdicts))
    return 0


def idle_peaks(contenders: dict[str, Contender], work: Path, rounds: int, found: Callable[[], int]) -> dict[str, int]:
    """Each contender's peak RSS on the empty mailbox (imports, sign-in, an empty listing), median of the rounds."""
    peaks: dict[str, list[int]] = {name: [] for name in contenders}
    for number in range(rounds):
        for index, (name, run) in enumerate(contenders.items()):
            measured = run(work / f"idle-{number}-{index}")
            if json.loads(measured.stdout)["totals"]["messages_seen"] != 0 or found():
                raise SystemExit("the idle run found mail")
            peaks[name].append(measured.peak_rss)
    return {name: int(statistics.median(values)) for name, values in peaks.items()}


def big_rounds(
    contenders: dict[str, Contender],
    idle: dict[str, int],
    size: int,
    *,
    rounds: int,
    work: Path,
    prepare: Callable[[], object],
    intact: Callable[[], str],
) -> dict[str, list[Run]]:
    """The runs on the big mail, each one's peak set against its own idle process (the naive one against ours')."""

    def check(name: str, _dir: Path, measured: Measured) -> tuple[str, dict[str, float]]:
        base = idle.get(name, idle[OURS])
        above = measured.peak_rss - base
        return intact(), {"idle peak MiB": base / 2**20, "above idle MiB": above / 2**20, "/ attachment": above / size}

    return run_rounds(contenders, rounds=rounds, work=work / "big", prepare=prepare, check=check)


def imap_half(size: int, roots: dict[str, Path], *, rounds: int, skip_naive: bool) -> dict[str, list[Run]]:
    with MailWorld() as world:
        ours: dict[str, Contender] = {
            name: functools.partial(run_ours, world, root=root) for name, root in roots.items()
        }
        idle = idle_peaks(ours, world.work, rounds, found=lambda: world.doc2.uploads != [])
        pdf = make_pdf(7, size)
        digest = hashlib.sha256(pdf).hexdigest()
        raw = make_message(1, pdf, "big-scan.pdf")
        del pdf
        mail_size = len(raw)
        seconds = world.seed([raw])
        del raw
        print(f"mailbox: one mail of {mib(mail_size)} holding a {mib(size)} PDF (APPEND {seconds:.1f} s) for {USER}")
        contenders = dict(ours)
        if not skip_naive:
            contenders["naive loop (reference)"] = functools.partial(run_naive, world)
        intact = functools.partial(check, world, digest, size)
        return big_rounds(contenders, idle, size, rounds=rounds, work=world.work, prepare=world.reseed, intact=intact)


def print_table(results: dict[str, list[Run]], size: int) -> None:
    rows = [
        [
            name,
            len(runs),
            mib(statistics.median(r.extra["idle peak MiB"] for r in runs) * 2**20),
            mib(statistics.median(r.measured.peak_rss for r in runs)),
            spread([r.extra["above idle MiB"] for r in runs], 1) + " MiB",
            f"{statistics.median(r.extra['/ attachment'] for r in runs):.2f}x",
            spread([r.measured.seconds for r in runs]),
            spread([r.measured.cpu_seconds for r in runs]),
        ]
        for name, runs in results.items()
    ]
    print()
    headers = ["process", "runs", "idle peak RSS", "peak RSS", "above idle", "/ attachment", "seconds", "own CPU s"]
    print(table(headers, rows))
    print(
        f"(median (range) of the runs; idle: each checkout on the empty mailbox, the naive one set against ours'; "
        f"attachment {mib(size)})"
    )


def graph_half(size: int, roots: dict[str, Path], *, rounds: int, skip_naive: bool) -> dict[str, list[Run]]:
    """The same over Graph: the local Entra ID and Graph emulators, one message with one file attachment."""
    with GraphWorld() as world:
        world.seed([])

        def ours(root: Path, work: Path) -> Measured:
            return world.run_ours(work, "graph", ingest_root=root)

        contenders: dict[str, Contender] = {name: functools.partial(ours, root) for name, root in roots.items()}
        idle = idle_peaks(contenders, world.work, rounds, found=lambda: world.doc2.uploads != [])
        pdf = make_pdf(7, size)
        digest = hashlib.sha256(pdf).hexdigest()
        print(f"mailbox: one Graph message with a {mib(size)} PDF file attachment")
        if not skip_naive:
            contenders["naive client (reference)"] = functools.partial(run_naive_graph, world)
        intact = functools.partial(graph_check, world, digest, size)
        seed = functools.partial(world.seed, [("big-scan.pdf", pdf)])
        return big_rounds(contenders, idle, size, rounds=rounds, work=world.work, prepare=seed, intact=intact)


def graph_check(world: GraphWorld, digest: str, size: int) -> str:
    uploads = world.doc2.uploads
    if len(uploads) != 1 or hashlib.sha256(uploads[0].content).hexdigest() != digest:
        raise SystemExit(f"DOC² received {len(uploads)} uploads, expected the one {size}-byte PDF intact")
    if world.count(PROCESSED) != 1:
        raise SystemExit(f"the message was not moved to {PROCESSED}")
    return f"PDF intact in DOC², message in {PROCESSED}"


def _verdict(half: str, results: dict[str, list[Run]], size: int) -> str:
    above = max(r.extra["above idle MiB"] for r in results[OURS]) * 2**20
    verdict = "met" if above <= TARGET * size else "MISSED"
    target = f"<= {TARGET}x the attachment ({mib(TARGET * size)})"
    return f"{half}: target peak RSS above idle {target}: ours at most {mib(above)} -> {verdict}"


if __name__ == "__main__":
    sys.exit(main())
