"""Issue 14: the state store's round trips in an IMAP import, Azure Table Storage against SQLite.

    .venv/bin/python bench/state_roundtrips.py                       # 1,000 mails, +10 ms per storage request
    .venv/bin/python bench/state_roundtrips.py --messages 300 --latency-ms 0 --latency-ms 10 --rounds 3
    .venv/bin/python bench/state_roundtrips.py --before /tmp/old-main  # another checkout in the same rounds

In Azure the state store is Table Storage (``INGEST_STATE_URL=azuretable://...``): each state write or read is an
HTTPS round trip of ~5-20 ms from a Function App in the same region, where SQLite on a local disk costs a fraction
of a millisecond. This benchmark counts those round trips and what they cost.

A loopback Dovecot (IMAPS) holds ``--messages`` mails with one small PDF each; the lean DOC² endpoint
(``bench/_lean_doc2.py``, a process of its own) answers at once. ``python -m ingest import`` runs as a user runs it
(a child process), once per contender and round, on a mailbox re-seeded from one snapshot:

* ``sqlite``: the state store a local SQLite file (what bench/imap_throughput.py measures);
* ``table +N ms``: the state store a fresh table on Azurite, through a proxy (``bench/_storage_proxy.py``) that
  counts every Table and Blob request (the account's lease is a blob) and waits N ms before forwarding each one.

Every run must leave each PDF in DOC² exactly once and every mail in Processed (checked outside the timed part).
The tables show requests per mail (by kind) and the median wall time, as seconds per 1,000 mails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    PYTHON,
    ROOT,
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
from bench._rounds import Run, before_arguments, before_label, paired, save_results
from bench._storage_proxy import StorageProxy
from bench.imap_throughput import _World, check_imported
from tests.support.azurite import Azurite, find_azurite_binary, unique_name

OURS = "ours"


@dataclass
class Result:
    measured: Measured
    table_requests: Counter[str]
    blob_requests: Counter[str]
    transaction_operations: int


class StateWorld:
    """Azurite with a counting proxy in front of its Table and its Blob service."""

    def __init__(self, work: Path) -> None:
        binary = find_azurite_binary()
        if binary is None:
            raise SystemExit("Azurite is not installed: bash scripts/setup.sh --with-azurite")
        (work / "azurite").mkdir(parents=True)
        self.azurite = Azurite(work / "azurite", binary)
        self.table: StorageProxy | None = None
        self.blob: StorageProxy | None = None

    def __enter__(self) -> StateWorld:
        self.azurite.start()
        self.table = StorageProxy(self.azurite.ports["table"]).__enter__()
        self.blob = StorageProxy(self.azurite.ports["blob"]).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for proxy in (self.table, self.blob):
            if proxy is not None:
                proxy.__exit__()
        self.azurite.stop()

    def state_url(self, latency: float) -> str:
        assert self.table is not None and self.blob is not None
        for proxy in (self.table, self.blob):
            proxy.latency = latency
            proxy.reset()
        connection = self.azurite.connection_string
        connection = connection.replace(self.azurite.endpoint("table"), f"{self.table.url}/devstoreaccount1")
        connection = connection.replace(self.azurite.endpoint("blob"), f"{self.blob.url}/devstoreaccount1")
        return f"azuretable+connstr:{unique_name('bench')};{connection}"


def run_import(world: _World, state_url: str, round_dir: Path, root: Path, dedupe: str) -> Measured:
    # The default left out: an older checkout (--before) may not know the field.
    fields = {"dedupe": dedupe} if dedupe != "account" else {}
    config = world.write_accounts(round_dir / "accounts.yaml", **fields)
    env = world.ingest_env(config, round_dir / "state.sqlite3")
    env["INGEST_STATE_URL"] = state_url
    measured = run_measured([PYTHON, "-m", "ingest", "import", "--json", "--quiet"], env=env, cwd=root)
    if measured.returncode != 0:
        raise SystemExit(f"python -m ingest import failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--pdf-kb", type=int, default=20, help="size of the one PDF in each mail (KB)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (3 for a median and a range)")
    parser.add_argument(
        "--latency-ms", type=float, action="append", help="added to every storage request (repeatable; default 10)"
    )
    parser.add_argument("--no-sqlite", action="store_true", help="leave out the SQLite contender")
    parser.add_argument(
        "--dedupe", choices=["account", "content"], default="account", help="the account's dedupe (content: the index)"
    )
    before_arguments(parser)
    args = parser.parse_args()
    latencies = args.latency_ms or [10.0]

    print(f"machine: {machine_summary()}")
    load = [load_average()]
    print(f"before the rounds: {load[0]}")
    checkouts = {OURS: ROOT} | {before_label(root): root.resolve() for root in args.before}
    for label, root in checkouts.items():
        print(f"{label} = python -m ingest in {root}")
    stores: dict[str, float | None] = {} if args.no_sqlite else {"sqlite": None}
    stores |= {f"table +{ms:g} ms": ms / 1000 for ms in latencies}
    contenders = [
        (f"{label}: {store}", root, latency) for label, root in checkouts.items() for store, latency in stores.items()
    ]

    count = args.messages
    work = Path(tempfile.mkdtemp(prefix="doc2-bench-state-"))
    results: dict[str, list[Result]] = {name: [] for name, _, _ in contenders}
    try:
        with _World("lean") as world, StateWorld(work) as storage:
            pdfs = [make_pdf(n, args.pdf_kb * 1000) for n in range(count)]
            digests = {hashlib.sha256(pdf).hexdigest() for pdf in pdfs}
            raws = [make_message(n, pdf, f"invoice-{n:06d}.pdf") for n, pdf in enumerate(pdfs)]
            mail_bytes = sum(len(raw) for raw in raws)
            seconds = world.seed(raws)
            del pdfs, raws
            print(
                f"mailbox: {count} mails with one {args.pdf_kb} KB PDF each, {mib(mail_bytes)} of mail (seeded in "
                f"{seconds:.1f} s); DOC² the lean endpoint; Table Storage and Blob (leases) on Azurite behind a "
                "counting proxy"
            )
            for number in range(args.rounds):
                order = contenders[number % len(contenders) :] + contenders[: number % len(contenders)]
                for index, (name, root, latency) in enumerate(order):
                    round_dir = world.work / f"state-round-{number}-{index}"
                    round_dir.mkdir()
                    world.reseed()
                    url = f"sqlite:///{round_dir / 'state.sqlite3'}" if latency is None else storage.state_url(latency)
                    measured = run_import(world, url, round_dir, root, args.dedupe)
                    check = check_imported(world, digests, count)
                    assert storage.table is not None and storage.blob is not None
                    tables = storage.table.counts() if latency is not None else Counter()
                    blobs = storage.blob.counts() if latency is not None else Counter()
                    result = Result(measured, tables, blobs, storage.table.transaction_operations)
                    results[name].append(result)
                    report = json.loads(measured.stdout)
                    print(
                        f"  round {number + 1}: {name:36} {measured.seconds:7.2f} s (in-process "
                        f"{report['duration_seconds']:.2f} s), {sum(tables.values())} Table requests, "
                        f"{sum(blobs.values())} Blob requests; {check}",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load.append(load_average())
    print(f"after the rounds: {load[1]}")
    _print_tables(results, count)
    by_store = {
        f"{store}, {count:,} mails × {args.pdf_kb} KB": {
            label: [_run(result, count) for result in results[f"{label}: {store}"]] for label in checkouts
        }
        for store in stores
    }
    save_results(args.json_out, by_store, reference=OURS, load=load)
    for title, runs in by_store.items():
        for label in list(checkouts)[1:]:
            wall = paired(runs[label], runs[OURS], lambda r: r.measured.seconds)
            print(f"{title}: {label} / {OURS}, wall time paired by round: {wall}")
    return 0


def _run(result: Result, count: int) -> Run:
    """A run as bench/run_all.py reads it: the requests per mail beside wall and CPU."""
    extra = {"in-process s": float(json.loads(result.measured.stdout)["duration_seconds"])}
    if result.table_requests:
        extra |= {"Table req / mail": sum(result.table_requests.values()) / count}
    return Run(result.measured, extra)


def _print_tables(results: dict[str, list[Result]], count: int) -> None:
    per_1000 = 1000 / count
    rows = []
    for name, runs in results.items():
        seconds = [r.measured.seconds for r in runs]
        table_requests = statistics.median(sum(r.table_requests.values()) for r in runs)
        blob_requests = statistics.median(sum(r.blob_requests.values()) for r in runs)
        rows.append(
            [
                name,
                len(runs),
                spread(seconds),
                f"{statistics.median(seconds) * per_1000:.1f}",
                f"{statistics.median(r.measured.cpu_seconds for r in runs) * per_1000:.1f}",
                f"{table_requests / count:.2f}" if ": table" in name else "-",
                f"{blob_requests:.0f}" if ": table" in name else "-",
            ]
        )
    print("\nwall time (median and range of the rounds), requests of one import pass:")
    print(
        table(
            ["contender", "runs", "seconds", "s / 1,000 mails", "own CPU s / 1,000", "Table req / mail", "Blob req"],
            rows,
        )
    )
    kinds = sorted({kind for runs in results.values() for r in runs for kind in r.table_requests})
    if kinds:
        by_kind = []
        for name, runs in results.items():
            if ": table" not in name:
                continue
            first = runs[0]
            by_kind.append(
                [
                    name,
                    *[f"{first.table_requests.get(kind, 0) / count:.3f}" for kind in kinds],
                    f"{first.transaction_operations / count:.2f}",
                ]
            )
        print("\nTable requests per mail by kind (first round), and the operations inside transactions per mail:")
        print(table(["contender", *kinds, "ops in transactions"], by_kind))


if __name__ == "__main__":
    sys.exit(main())
