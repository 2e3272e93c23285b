"""The core (ports, pipeline, flight) loads no adapter: the state stores, mailboxes, DOC² and Graph clients are
loaded by the composition root (ingest.service) that builds them. A fresh interpreter, so nothing else loaded them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ADAPTERS = ("ingest.state.", "ingest.mailbox", "ingest.graph", "ingest.doc2", "ingest.service")


def test_importing_the_core_loads_no_adapter() -> None:
    code = (
        "import sys, ingest.ports, ingest.pipeline, ingest.flight\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('ingest.'))))\n"
    )
    root = Path(__file__).resolve().parents[1]
    loaded = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    modules = loaded.stdout.split()
    assert "ingest.pipeline" in modules and "ingest.state.base" in modules  # the interface, not a store
    assert [m for m in modules if m.startswith(ADAPTERS) and m != "ingest.state.base"] == []
