"""The Graph benchmarks' world: a test CA, the local Entra ID and Graph emulators (one tenant, one app, one mailbox,
as the Graph tests use them), the local DOC² server, a work directory; seeding the mailbox and running our CLI
against it.

The emulators and the DOC² server run in the benchmark's own process; the contenders run as child processes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from bench._common import PYTHON, ROOT, Measured, run_measured
from tests.support.ca import TestCA, make_test_ca
from tests.support.doc2_server import Doc2Server
from tests.support.graph_server import FileAttachment
from tests.support.microsoft import MAILBOX, MicrosoftCloud

RECEIVED = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
PROCESSED = "Inbox/Processed"


class GraphWorld:
    """Entra ID + Graph emulators and the DOC² server, each with the latency the benchmark asks for."""

    def __init__(self, *, graph_latency: float = 0.0, doc2_latency: float = 0.0) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="doc2-bench-graph-"))
        self.ca: TestCA = make_test_ca(self.work / "ca")
        self.doc2 = Doc2Server(self.ca)
        self._graph_latency = graph_latency
        self._doc2_latency = doc2_latency
        self._cloud: MicrosoftCloud | None = None

    def __enter__(self) -> GraphWorld:
        self._cloud = MicrosoftCloud.start(self.ca)
        self._cloud.graph.latency_seconds = self._graph_latency
        self.doc2.start()
        self.doc2.latency_seconds = self._doc2_latency
        return self

    def __exit__(self, *exc: object) -> None:
        self.doc2.stop()
        if self._cloud is not None:
            self._cloud.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    @property
    def cloud(self) -> MicrosoftCloud:
        if self._cloud is None:
            raise RuntimeError("GraphWorld used outside its with-block")
        return self._cloud

    def seed(self, attachments: Iterable[tuple[str, bytes]]) -> int:
        """A fresh mailbox whose Inbox holds one mail per (file name, PDF), oldest first; the counters at zero.
        Returns the number of mails."""
        cloud = self.cloud
        cloud.mailbox = store = cloud.graph.add_mailbox(MAILBOX)  # replaces the previous one
        count = 0
        for number, (name, content) in enumerate(attachments):
            store.add_message(
                subject=f"Invoice {number:06d}",
                sender=("Supplier Billing", "billing@supplier.example"),
                received=RECEIVED + dt.timedelta(seconds=number),
                internet_message_id=f"<bench-{number:06d}@supplier.example>",
                attachments=[FileAttachment(name, content, "application/pdf")],
            )
            count += 1
        self.doc2.clear()
        cloud.graph.reset_counters()
        return count

    def count(self, folder: str) -> int:
        return len(self.cloud.mailbox.messages_in(folder))

    def write_accounts(self, path: Path, doc2: dict[str, object] | None = None, **fields: object) -> Path:
        """An accounts file with one Graph account (client secret) on the emulators, for ``python -m ingest``;
        ``doc2`` adds fields to its doc2 section, ``fields`` to the account."""
        account = self.cloud.account(processed_folder=PROCESSED, **fields)
        data = {
            "doc2": {"base_url": self.doc2.url, "ca_file": str(self.ca.ca_cert), **(doc2 or {})},
            # Defaults left out: an older checkout (--before) reads the same file without today's new fields.
            "accounts": [
                {"type": account.type} | account.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            ],
        }
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")  # JSON is YAML
        return path

    def ingest_env(self, config: Path, state: Path) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("INGEST_", "DOC2_", "KEY_VAULT", "GRAPH_", "AUTHORITY_HOST"))
        }
        env.update(
            INGEST_CONFIG=str(config),
            INGEST_STATE_URL=f"sqlite:///{state}",
            DOC2_API_KEY=self.doc2.api_key,
            GRAPH_ENDPOINT=self.cloud.graph.endpoint,
            AUTHORITY_HOST=self.cloud.entra.base_url,
            GRAPH_CLIENT_ID=self.cloud.secrets["graph-client-id"],
            GRAPH_CLIENT_SECRET=self.cloud.secrets["graph-client-secret"],
        )
        return env

    def run_ours(
        self, work: Path, label: str, *, ingest_root: Path = ROOT, doc2: dict[str, object] | None = None
    ) -> Measured:
        """``python -m ingest import --json`` as a user runs it, against this world, in a fresh state store."""
        work.mkdir(parents=True, exist_ok=True)
        config = self.write_accounts(work / "accounts.yaml", doc2)
        env = self.ingest_env(config, work / "state.sqlite3")
        measured = run_measured([PYTHON, "-m", "ingest", "import", "--json", "--quiet"], env=env, cwd=ingest_root)
        if measured.returncode != 0:
            raise SystemExit(
                f"python -m ingest import ({label}) failed ({measured.returncode}):\n{measured.stderr[-3000:]}"
            )
        return measured
