"""SQLite state store for local runs and the command line. The account lock is an flock: it dies with the process.

Each ``record_*`` call is one transaction (WAL, ``synchronous=NORMAL``: durable once it returns, should the
process be killed; a power cut may lose the last ones, which the next run uploads again with the same
custom_doc_id). ``record_uploads`` and ``record_settlements`` write many rows in one transaction: one commit for a
whole batch of messages instead of one per row, which was most of the store's cost in a run.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..errors import AccountBusy, ConfigError
from .base import (
    MAX_CURSOR_CHARS,
    AccountLock,
    ContentRecord,
    DuplicateRecord,
    HeldLock,
    MessageInfo,
    MessageRecord,
    MessageState,
    RunRecord,
    Settlement,
    Status,
    UploadRecord,
    run_verdict,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    account TEXT NOT NULL, identity TEXT NOT NULL, custom_doc_id TEXT NOT NULL,
    filename TEXT NOT NULL, doc2_id TEXT, uploaded_at TEXT NOT NULL,
    PRIMARY KEY (account, identity, custom_doc_id)
);
CREATE TABLE IF NOT EXISTS messages (
    account TEXT NOT NULL, message_key TEXT NOT NULL, identity TEXT,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated_at TEXT NOT NULL,
    PRIMARY KEY (account, message_key)
);
CREATE TABLE IF NOT EXISTS contents (
    digest TEXT NOT NULL PRIMARY KEY, account TEXT NOT NULL, identity TEXT NOT NULL, custom_doc_id TEXT NOT NULL,
    filename TEXT NOT NULL, doc2_id TEXT, uploaded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS duplicates (
    account TEXT NOT NULL, identity TEXT NOT NULL, custom_doc_id TEXT NOT NULL, filename TEXT NOT NULL,
    original_digest TEXT NOT NULL, original_account TEXT NOT NULL, original_identity TEXT NOT NULL,
    original_custom_doc_id TEXT NOT NULL, original_filename TEXT NOT NULL, original_doc2_id TEXT,
    original_uploaded_at TEXT NOT NULL, recorded_at TEXT NOT NULL,
    PRIMARY KEY (account, identity, custom_doc_id)
);
CREATE TABLE IF NOT EXISTS cursors (
    account TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE TABLE IF NOT EXISTS message_info (
    account TEXT NOT NULL, message_key TEXT NOT NULL,
    sender TEXT, subject TEXT, received TEXT, message_id TEXT,
    PRIMARY KEY (account, message_key)
);
CREATE TABLE IF NOT EXISTS runs (
    account TEXT NOT NULL PRIMARY KEY, type TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT NOT NULL,
    outcome TEXT NOT NULL, counts TEXT NOT NULL, error TEXT, last_success_at TEXT,
    failures_in_a_row INTEGER NOT NULL DEFAULT 0
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class SqliteStateStore:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """Opens (creates) the database at ``path``; its directory must exist: a mistyped path is not made real.
        ``read_only`` (dry runs): a database that does not exist is not created; the store is empty instead."""
        self.path = path
        if not path.parent.is_dir():
            raise ConfigError(
                f"state store {path}: the directory {str(path.parent)!r} does not exist (it is not created): create "
                "it or set INGEST_STATE_URL to another path"
            )
        target = ":memory:" if read_only and not path.exists() else path
        try:
            self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"state store {path}: cannot open: {err}") from err
        self._lock = threading.Lock()
        self._lock_dir = path.with_name(path.name + ".locks")

    def uploaded(self, account: str, identity: str) -> set[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT custom_doc_id FROM uploads WHERE account=? AND identity=?", (account, identity)
            ).fetchall()
        return {row[0] for row in rows}

    def record_upload(
        self, account: str, identity: str, custom_doc_id: str, filename: str, doc2_id: str | None
    ) -> None:
        self.record_uploads(account, [UploadRecord(identity, custom_doc_id, filename, doc2_id)])

    def record_uploads(
        self, account: str, uploads: Sequence[UploadRecord], cursors: Mapping[str, str | None] | None = None
    ) -> None:
        if not uploads and not cursors:
            return
        now = _now()
        rows = [(account, u.identity, u.custom_doc_id, u.filename, u.doc2_id, now) for u in uploads]
        contents = [
            (u.digest, account, u.identity, u.custom_doc_id, u.filename, u.doc2_id, now) for u in uploads if u.digest
        ]
        with self._lock, self._transaction():
            if rows:
                self._db.executemany("INSERT OR REPLACE INTO uploads VALUES (?,?,?,?,?,?)", rows)
            if contents:  # only with dedupe: content
                self._db.executemany("INSERT OR REPLACE INTO contents VALUES (?,?,?,?,?,?,?)", contents)
            for name, value in (cursors or {}).items():
                self._write_cursor(account, name, value)

    def find_content(self, digest: str, since: datetime) -> ContentRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM contents WHERE digest=?", (digest,)).fetchone()
        if row is None:
            return None
        found = ContentRecord(row[0], row[1], row[2], row[3], row[4], row[5], datetime.fromisoformat(row[6]))
        return found if found.uploaded_at >= since else None

    def record_duplicate(self, account: str, duplicate: DuplicateRecord) -> None:
        original = duplicate.original
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO duplicates VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    account, duplicate.identity, duplicate.custom_doc_id, duplicate.filename, original.digest,
                    original.account, original.identity, original.custom_doc_id, original.filename, original.doc2_id,
                    original.uploaded_at.isoformat(), _now(),
                ),
            )  # fmt: skip

    def duplicates(self, account: str, identity: str) -> list[DuplicateRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM duplicates WHERE account=? AND identity=? ORDER BY custom_doc_id", (account, identity)
            ).fetchall()
        return [
            DuplicateRecord(
                row[1],
                row[2],
                row[3],
                ContentRecord(row[4], row[5], row[6], row[7], row[8], row[9], datetime.fromisoformat(row[10])),
            )
            for row in rows
        ]

    def message(self, account: str, message_key: str) -> MessageState | None:
        with self._lock:
            row = self._db.execute(
                "SELECT status, attempts, last_error FROM messages WHERE account=? AND message_key=?",
                (account, message_key),
            ).fetchone()
        return MessageState(row[0], row[1], row[2]) if row else None

    def record_failure(self, account: str, message_key: str, identity: str | None, error: str) -> int:
        with self._lock:
            self._db.execute(
                """INSERT INTO messages VALUES (?,?,?,'pending',1,?,?)
                   ON CONFLICT(account, message_key) DO UPDATE SET
                   attempts=attempts+1, last_error=excluded.last_error, updated_at=excluded.updated_at,
                   identity=COALESCE(excluded.identity, identity), status='pending'""",
                (account, message_key, identity, error, _now()),
            )
            row = self._db.execute(
                "SELECT attempts FROM messages WHERE account=? AND message_key=?", (account, message_key)
            ).fetchone()
        return int(row[0])

    def record_settled(
        self, account: str, message_key: str, identity: str | None, status: Status, note: str | None
    ) -> None:
        self.record_settlements(account, [Settlement(message_key, identity, status, note)])

    def record_settlements(self, account: str, settled: Sequence[Settlement]) -> None:
        if not settled:
            return
        now = _now()
        rows = [(account, s.message_key, s.identity, s.status, s.note, now) for s in settled]
        with self._lock, self._transaction():
            self._db.executemany(
                """INSERT INTO messages VALUES (?,?,?,?,0,?,?)
                   ON CONFLICT(account, message_key) DO UPDATE SET status=excluded.status,
                   last_error=COALESCE(excluded.last_error, last_error), updated_at=excluded.updated_at,
                   identity=COALESCE(excluded.identity, identity)""",
                rows,
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction (the connection is in autocommit mode: each statement alone would be one)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def settled_keys(self, account: str) -> set[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT message_key FROM messages WHERE account=? AND status IN ('processed','failed','skipped')",
                (account,),
            ).fetchall()
        return {row[0] for row in rows}

    def cursor(self, account: str, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM cursors WHERE account=? AND name=?", (account, name)).fetchone()
        return str(row[0]) if row else None

    def record_cursor(self, account: str, name: str, value: str | None) -> None:
        with self._lock:
            self._write_cursor(account, name, value)

    def _write_cursor(self, account: str, name: str, value: str | None) -> None:
        if value is not None and len(value) > MAX_CURSOR_CHARS:
            raise ValueError(
                f"cursor {name!r} of account {account!r}: {len(value)} characters, more than the store keeps"
            )
        if value is None:
            self._db.execute("DELETE FROM cursors WHERE account=? AND name=?", (account, name))
        else:
            self._db.execute("INSERT OR REPLACE INTO cursors VALUES (?,?,?,?)", (account, name, value, _now()))

    def add_cursor(self, account: str, name: str, value: str) -> bool:
        with self._lock:
            added = self._db.execute(
                "INSERT OR IGNORE INTO cursors VALUES (?,?,?,?)", (account, name, value, _now())
            ).rowcount
        return added == 1

    # -- what operators look at (status, failed, retry) -----------------------------------------------------

    def record_message_info(self, account: str, message_key: str, info: MessageInfo) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO message_info VALUES (?,?,?,?,?,?)",
                (account, message_key, info.sender, info.subject, info.received, info.message_id),
            )

    def messages_with_status(self, account: str, statuses: Sequence[Status]) -> list[MessageRecord]:
        if not statuses:
            return []
        marks = ",".join("?" * len(statuses))
        with self._lock:
            rows = self._db.execute(
                f"""SELECT m.message_key, m.identity, m.status, m.attempts, m.last_error, m.updated_at,
                           i.sender, i.subject, i.received, i.message_id
                    FROM messages m LEFT JOIN message_info i USING (account, message_key)
                    WHERE m.account=? AND m.status IN ({marks}) ORDER BY m.updated_at, m.message_key""",  # noqa: S608 - only '?' marks
                (account, *statuses),
            ).fetchall()
        return [
            MessageRecord(account, row[0], row[1], row[2], row[3], row[4], row[5], MessageInfo(*row[6:10]))
            for row in rows
        ]

    def forget_message(self, account: str, message_key: str) -> bool:
        with self._lock, self._transaction():
            gone = self._db.execute(
                "DELETE FROM messages WHERE account=? AND message_key=?", (account, message_key)
            ).rowcount
            self._db.execute("DELETE FROM message_info WHERE account=? AND message_key=?", (account, message_key))
        return gone > 0

    def record_run(self, run: RunRecord) -> RunRecord:
        verdict = run_verdict(run.outcome, run.error)
        with self._lock, self._transaction():
            row = self._db.execute(
                "SELECT last_success_at, failures_in_a_row FROM runs WHERE account=?", (run.account,)
            ).fetchone()
            last_success, in_a_row = (row[0], int(row[1])) if row else (None, 0)
            if verdict is True:
                last_success, in_a_row = run.finished_at, 0
            elif verdict is False:
                in_a_row += 1
            self._db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    run.account,
                    run.type,
                    run.started_at,
                    run.finished_at,
                    run.outcome,
                    json.dumps(run.counts),
                    run.error,
                    last_success,
                    in_a_row,
                ),
            )
        return dataclasses.replace(run, last_success_at=last_success, failures_in_a_row=in_a_row)

    def last_runs(self) -> dict[str, RunRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs").fetchall()
        return {
            row[0]: RunRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7], int(row[8]))
            for row in rows
        }

    @contextmanager
    def account_lock(self, account: str) -> Iterator[AccountLock]:
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        handle = os.open(self._lock_dir / f"{account}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AccountBusy(
                    f"account {account!r}: another run is working on it (lock {self._lock_dir / account}.lock); skipped"
                ) from None
            yield HeldLock()
        finally:
            os.close(handle)  # closing releases the flock; a killed process releases it too

    def close(self) -> None:
        with self._lock:
            self._db.close()
