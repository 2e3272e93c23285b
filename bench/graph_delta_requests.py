"""Issue 12: Graph requests per new mail, reading the folder by delta query against listing it whole (as before).

    .venv/bin/python bench/graph_delta_requests.py                # 5,000 old mails, 10 new ones
    .venv/bin/python bench/graph_delta_requests.py --old 1000 --new 50

The source folder of one Graph mailbox (the local Graph emulator) holds ``--old`` mails the account's filters leave
where they are (a sender outside ``filters.from``: newsletters, replies, anything not for DOC²), and ``--new`` mails
from the supplier arrive. One import run takes the new ones, each contender with its own state store:

* **full listing** (as before issue 12): the source folder listed whole, 50 a page, expanded with its attachments'
  metadata (``GraphMailbox`` without a cursor store: that path is still there, and is the one the mailbox tests use);
* **delta**: the product as it runs now: the state store holds the delta link of the earlier runs; this run asks
  Graph only for what changed since. The one full round of the first run is shown apart (it is paid once).

The Processed folder exists already (a mailbox imported before); its first creation costs two requests once.
Both runs are checked: every new mail's PDF in DOC² once, the new mails in Inbox/Processed, the old ones left. The
emulator counts every HTTP request (a ``$batch`` is one). Target: at least 20x fewer requests per new mail.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine_summary, make_pdf, table
from bench._graph import GraphWorld
from ingest.config import parse_config
from ingest.mailbox.graph import GraphMailbox
from ingest.pipeline import Pipeline
from ingest.service import make_doc2_client, run_import
from ingest.settings import Settings
from ingest.state.factory import open_state_store
from tests.support.graph_server import FileAttachment
from tests.support.microsoft import DictSecrets

TARGET_FEWER = 20.0
START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)


def _seed_old(world: GraphWorld, count: int) -> None:
    world.cloud.mailbox.folder("Inbox/Processed", create=True)  # a mailbox imported before: the folder is there
    for number in range(count):
        world.cloud.mailbox.add_message(
            subject=f"Newsletter {number}",
            sender=("News", "news@newsletter.example"),
            received=START + dt.timedelta(seconds=number),
            attachments=[FileAttachment(f"news-{number}.pdf", make_pdf(number, 2048), "application/pdf")],
        )


def _deliver_new(world: GraphWorld, count: int, tag: str) -> list[str]:
    names = []
    for number in range(count):
        name = f"invoice-{tag}-{number:03d}.pdf"
        world.cloud.mailbox.add_message(
            subject=f"Invoice {tag} {number}",
            sender=("Supplier", "billing@supplier.example"),
            attachments=[FileAttachment(name, make_pdf(10_000 + number, 20_000), "application/pdf")],
        )
        names.append(name)
    return names


def _one_run(world: GraphWorld, work: Path, *, delta: bool) -> tuple[float, object]:
    account = world.cloud.account(processed_folder="Inbox/Processed", filters={"from": ["*@supplier.example"]})
    data = {
        "doc2": {"base_url": world.doc2.url, "ca_file": str(world.ca.ca_cert)},
        "accounts": [account.model_dump(mode="json", by_alias=True, exclude_none=True)],
    }
    config = parse_config(data, work / "accounts.yaml")
    settings = Settings.from_environ(
        {
            "AUTHORITY_HOST": world.cloud.entra.base_url,
            "GRAPH_ENDPOINT": world.cloud.graph.endpoint,
            "INGEST_STATE_URL": f"sqlite:///{work / 'state.sqlite3'}",
        }
    )
    secrets = DictSecrets(world.cloud.secrets | {"doc2-api-key": world.doc2.api_key})
    state = open_state_store(settings.state_url)
    started = time.perf_counter()
    try:
        if delta:
            report = run_import(settings, config, secrets=secrets, state=state)
        else:
            pipeline = Pipeline(
                config,
                state=state,
                open_mailbox=lambda a, clock: GraphMailbox(
                    a,  # type: ignore[arg-type]
                    secrets,
                    authority_host=settings.authority_host,
                    graph_endpoint=settings.graph_endpoint,
                    ca_file=str(world.ca.ca_cert),
                    deadline=None,
                    clock=clock,
                ),
                open_doc2=lambda: make_doc2_client(config, settings, secrets),
            )
            report = pipeline.run(list(config.accounts))
    finally:
        state.close()
    return time.perf_counter() - started, report


def _check(world: GraphWorld, names: list[str], old: int, report: object) -> None:
    uploads = world.doc2.uploads_by_custom_doc_id()
    got = sorted(u.filename for copies in uploads.values() for u in copies if u.filename in set(names))
    if got != sorted(names) or any(len(c) != 1 for c in uploads.values()):
        raise SystemExit(f"not every new PDF once in DOC²: {got} {report}")
    if len(world.cloud.mailbox.messages_in("Inbox")) != old:
        raise SystemExit("the old mails did not stay in the Inbox")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=int, default=5000)
    parser.add_argument("--new", type=int, default=10)
    args = parser.parse_args()
    rows = []
    figures: dict[str, float] = {}
    with GraphWorld() as world, tempfile.TemporaryDirectory(prefix="doc2-bench-delta-") as tmp:
        for label, delta in (("full listing (before issue 12)", False), ("delta", True)):
            world.seed([])  # a fresh, empty mailbox, counters at zero
            _seed_old(world, args.old)
            work = Path(tmp) / label.split()[0]
            work.mkdir()
            if delta:  # the runs before: the first makes the full round once and keeps the delta link
                world.cloud.graph.reset_counters()
                seconds, _ = _one_run(world, work, delta=True)
                first = len(world.cloud.graph.requests)
                rows.append(
                    ["delta, the first run ever (its full round)", f"{args.old:,}", 0, first, "", f"{seconds:.2f}"]
                )
            names = _deliver_new(world, args.new, label.split()[0])
            world.doc2.clear()
            world.cloud.graph.reset_counters()
            seconds, report = _one_run(world, work, delta=delta)
            _check(world, names, args.old, report)
            requests = len(world.cloud.graph.requests)
            listing = sum(1 for r in world.cloud.graph.requests if "/messages" in r.path and r.method == "GET")
            figures[label] = requests / args.new
            rows.append(
                [
                    label,
                    f"{args.old:,}",
                    args.new,
                    requests,
                    f"{requests / args.new:.2f} ({listing} listing)",
                    f"{seconds:.2f}",
                ]
            )
    fewer = figures["full listing (before issue 12)"] / figures["delta"]
    print(machine_summary())
    print(table(["reading the folder", "old mails", "new mails", "Graph requests", "per new mail", "seconds"], rows))
    verdict = "met" if fewer >= TARGET_FEWER else "NOT met"
    print(f"\nrequests per new mail: {fewer:.1f}x fewer with delta (target >= {TARGET_FEWER:.0f}x: {verdict})")


if __name__ == "__main__":
    main()
