"""The SQLite state store and its per-account lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ingest.errors import AccountBusy
from ingest.state.sqlite import SqliteStateStore


def test_uploads_attempts_and_settled_keys_survive_reopening(tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    store.record_upload("a", "mid:1@x", "doc-1", "a.pdf", "d2-1")
    assert store.record_failure("a", "7:1", "mid:1@x", "boom") == 1
    assert store.record_failure("a", "7:1", "mid:1@x", "boom again") == 2
    store.record_settled("a", "7:2", "mid:2@x", "processed", None)
    store.close()

    store = SqliteStateStore(tmp_path / "s.db")
    assert store.uploaded("a", "mid:1@x") == {"doc-1"}
    assert store.uploaded("b", "mid:1@x") == set()
    state = store.message("a", "7:1")
    assert state is not None and (state.attempts, state.last_error, state.status) == (2, "boom again", "pending")
    assert store.settled_keys("a") == {"7:2"}
    store.close()


def test_lock_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    with store.account_lock("a"):
        with pytest.raises(AccountBusy, match="another run is working on it"), store.account_lock("a"):
            pass
        with store.account_lock("b"):  # other accounts are independent
            pass
    with store.account_lock("a"):  # released
        pass

    holder = textwrap.dedent(f"""
        import os, sys
        from ingest.state.sqlite import SqliteStateStore
        store = SqliteStateStore(__import__('pathlib').Path({str(tmp_path / "s.db")!r}))
        with store.account_lock('a'):
            print('locked', flush=True)
            os.kill(os.getpid(), 9)
    """)
    result = subprocess.run([sys.executable, "-c", holder], capture_output=True, text=True, check=False)
    assert "locked" in result.stdout and result.returncode == -9
    with store.account_lock("a"):  # the killed process's lock did not outlive it
        pass
