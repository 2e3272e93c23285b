"""Temporary files left by a killed run are swept by the next run (issue 9 #16), and only those."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ingest.model import BLOB_MEMORY_LIMIT, BlobWriter, FileBlob
from ingest.tempfiles import FILE_PREFIX, LOOSE_FILE_MAX_AGE_SECONDS, sweep_stale

from .mail import invoice_mail
from .support.scenario import PROJECT_ROOT

# A run that spills a big document to a temporary file, says so, and waits to be killed.
_SPILLING_RUN = """
import sys, time
from ingest.model import BlobWriter
writer = BlobWriter(memory_limit=16)
writer.write(b"x" * 1024)
blob = writer.finish()
print(blob.path, flush=True)
time.sleep(600)
"""


def _spilling_run(tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", _SPILLING_RUN],
        cwd=PROJECT_ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    path = Path(process.stdout.readline().strip())
    assert path.is_file() and path.is_relative_to(tmp)
    return process, path


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_the_next_run_sweeps_what_a_killed_run_left(scenario, private_tmp: Path) -> None:
    killed, left = _spilling_run(private_tmp)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert left.exists()  # nobody deleted it: the process had no chance
    alive, in_use = _spilling_run(private_tmp)
    try:
        stranger = private_tmp / "someone-else.tmp"
        stranger.write_bytes(b"not ours")
        ca_bundle = private_tmp / "doc2-ingest-ca-abcdefgh.pem"  # a live process's CA bundle: not ours to judge
        ca_bundle.write_bytes(b"bundle")

        scenario.write_config(scenario.pop3_account())
        report = scenario.run()

        assert report.accounts[0].outcome == "ok"
        assert not left.exists() and not left.parent.exists()
        assert in_use.exists()  # a live run's file stays
        assert stranger.exists() and ca_bundle.exists()
    finally:
        alive.kill()
        alive.wait()
    assert sweep_stale() == 1  # now that one is stale too
    assert not in_use.exists()


def test_loose_files_of_the_old_layout_go_only_when_old(private_tmp: Path) -> None:
    old = private_tmp / "doc2-ingest-abcd_123"
    new = private_tmp / "doc2-ingest-zyxw_987"
    for path in (old, new):
        path.write_bytes(b"x")
    long_ago = time.time() - LOOSE_FILE_MAX_AGE_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    link = private_tmp / "doc2-ingest-run-linkto00"
    target = private_tmp / "precious"
    target.mkdir()
    (target / "file").write_bytes(b"keep")
    link.symlink_to(target)

    assert sweep_stale() == 1
    assert not old.exists() and new.exists()
    assert (target / "file").exists() and link.is_symlink()  # a link is never followed, never removed


def _spilled(tmp: Path) -> list[Path]:
    return [path for path in tmp.rglob(f"{FILE_PREFIX}*") if path.is_file()]


def test_a_write_that_fails_leaves_no_temporary_file(private_tmp: Path) -> None:
    """The one rule every reader (IMAP, POP3, Graph downloads, the pre-pass) writes a message by: a failure inside
    the writer's block discards what was spilled; a block that ends well leaves the blob to finish()."""
    with pytest.raises(ConnectionError), BlobWriter(memory_limit=16) as failing:
        failing.write(b"x" * 1024)
        assert _spilled(private_tmp), "spilled to a temporary file"
        raise ConnectionError("the server hung up")
    assert _spilled(private_tmp) == []

    with BlobWriter(memory_limit=16) as writer:
        writer.write(b"x" * 1024)
    blob = writer.finish()
    assert isinstance(blob, FileBlob) and Path(blob.path).read_bytes() == b"x" * 1024
    blob.close()


@pytest.mark.parametrize("kind", ["pop3", "imap"])
def test_no_room_for_a_temporary_file_is_not_the_messages_fault(scenario, tmp_path, monkeypatch, kind) -> None:
    """A big message needs a temporary file; a machine that cannot make one (disk full, TMPDIR unusable) stops the
    account for this run without counting an attempt, so good mail never goes to Failed for it."""
    big = invoice_mail(1, attachments=[("scan.pdf", b"%PDF-1.4\n" + os.urandom(BLOB_MEMORY_LIMIT), "application/pdf")])
    scenario.append(big)
    make = scenario.pop3_account if kind == "pop3" else scenario.imap_account
    scenario.write_config(make(max_attempts=1))
    not_a_directory = tmp_path / "tmp-is-a-file"
    not_a_directory.write_bytes(b"")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_directory))

    first = scenario.run().accounts[0]

    assert first.outcome == "partial", first.error
    assert "no room for a temporary file" in (first.error or "")
    assert (first.messages_failed, first.messages_moved_to_failed, len(scenario.doc2.uploads)) == (0, 0, 0)
    assert len(scenario.messages("INBOX")) == 1

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    second = scenario.run().accounts[0]
    assert (second.outcome, second.messages_imported) == ("ok", 1), second.error
    assert [u.filename for u in scenario.doc2.uploads] == ["scan.pdf"]
