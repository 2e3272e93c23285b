"""The rows ``status``, ``failed`` and ``retry`` read in the Azure Table state store (``ingest.state.table``).

- ``i|MESSAGE_KEY`` in the account's partition: sender, subject, date and Message-ID of a message that failed,
  beside its ``m|`` row (a row of its own, so the attempt counting never rewrites it).
- Partition ``~runs``, one row per account (RowKey = the escaped account name): the latest run with its outcome
  and counts, the last successful run and the failed runs in a row. ``~`` is escaped in account partitions, so
  this partition cannot be an account's.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import TransientError
from .base import MessageInfo, MessageRecord, RunRecord, Status, run_verdict

if TYPE_CHECKING:
    from azure.data.tables import TableClient

RUNS_PARTITION = "~runs"
MAX_TEXT_CHARS = 8000
_CONCURRENCY_ATTEMPTS = 50


def _info_row(message_key: str) -> str:
    from .table import escape_key_part

    return f"i|{escape_key_part(message_key)}"


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value


class OperatorRecords:
    """Mixed into TableStateStore: what operators look at, on its table client and its error translation."""

    _table: TableClient
    _where: str
    _call: Callable[..., Any]
    _query: Callable[[str, dict[str, str], list[str]], list[Any]]
    _get: Callable[[str, str], Any]

    def _replace_unchanged(self, entity: dict[str, Any], etag: str) -> None:
        """Replaces ``entity`` if no one changed it since it was read (``etag``); ResourceModifiedError if they did."""
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        self._call(
            self._table.update_entity,
            entity,
            mode=UpdateMode.REPLACE,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )

    def record_message_info(self, account: str, message_key: str, info: MessageInfo) -> None:
        from azure.data.tables import UpdateMode

        entity: dict[str, Any] = {
            "PartitionKey": _key(account),
            "RowKey": _info_row(message_key),
            "account": account,
            "message_key": message_key,
        }
        for name in ("sender", "subject", "received", "message_id"):
            value = getattr(info, name)
            if value is not None:
                entity[name] = value[:MAX_TEXT_CHARS]
        self._call(self._table.upsert_entity, entity, mode=UpdateMode.REPLACE)

    def messages_with_status(self, account: str, statuses: Sequence[Status]) -> list[MessageRecord]:
        if not statuses:
            return []
        partition = _key(account)
        rows = self._query(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": "m|", "high": "m}"},
            ["message_key", "identity", "status", "attempts", "last_error", "updated_at"],
        )
        chosen = [row for row in rows if row.get("status") in statuses]
        if not chosen:
            return []
        infos = {
            row["message_key"]: MessageInfo(
                row.get("sender"), row.get("subject"), row.get("received"), row.get("message_id")
            )
            for row in self._query(
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                {"pk": partition, "low": "i|", "high": "i}"},
                ["message_key", "sender", "subject", "received", "message_id"],
            )
        }
        records = [
            MessageRecord(
                account,
                row["message_key"],
                row.get("identity"),
                row["status"],
                int(row.get("attempts", 0)),
                row.get("last_error"),
                _iso(row.get("updated_at")),
                infos.get(row["message_key"], MessageInfo()),
            )
            for row in chosen
        ]
        return sorted(records, key=lambda r: (r.updated_at or "", r.message_key))

    def forget_message(self, account: str, message_key: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        partition = _key(account)
        existed = self._get(account, message_key) is not None
        for row in ("m|" + _key(message_key), _info_row(message_key)):
            with suppress(ResourceNotFoundError):
                self._call(self._table.delete_entity, partition, row)
        return existed

    def record_run(self, run: RunRecord) -> RunRecord:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        verdict = run_verdict(run.outcome, run.error)
        for attempt in range(_CONCURRENCY_ATTEMPTS):
            try:
                old = self._call(self._table.get_entity, RUNS_PARTITION, _key(run.account))
            except ResourceNotFoundError:
                old = None
            last_success = old.get("last_success_at") if old is not None else None
            in_a_row = int(old.get("failures_in_a_row", 0)) if old is not None else 0
            if verdict is True:
                last_success, in_a_row = run.finished_at, 0
            elif verdict is False:
                in_a_row += 1
            entity: dict[str, Any] = {
                "PartitionKey": RUNS_PARTITION,
                "RowKey": _key(run.account),
                "account": run.account,
                "type": run.type,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "outcome": run.outcome,
                "counts": json.dumps(run.counts),
                "failures_in_a_row": in_a_row,
            }
            if run.error is not None:
                entity["error"] = run.error[:MAX_TEXT_CHARS]
            if last_success is not None:
                entity["last_success_at"] = last_success
            try:
                if old is None:
                    self._call(self._table.create_entity, entity)
                else:
                    self._replace_unchanged(entity, old.metadata["etag"])
                return dataclasses.replace(run, last_success_at=last_success, failures_in_a_row=in_a_row)
            except (ResourceExistsError, ResourceModifiedError):
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))  # noqa: S311 - jitter, not cryptography
        raise TransientError(f"{self._where}: could not record the run of account {run.account!r}")

    def last_runs(self) -> dict[str, RunRecord]:
        rows = self._query(
            "PartitionKey eq @pk",
            {"pk": RUNS_PARTITION},
            [
                "account",
                "type",
                "started_at",
                "finished_at",
                "outcome",
                "counts",
                "error",
                "last_success_at",
                "failures_in_a_row",
            ],
        )
        return {
            row["account"]: RunRecord(
                row["account"],
                row["type"],
                row["started_at"],
                row["finished_at"],
                row["outcome"],
                json.loads(row.get("counts") or "{}"),
                row.get("error"),
                row.get("last_success_at"),
                int(row.get("failures_in_a_row", 0)),
            )
            for row in rows
        }


def _key(text: str) -> str:
    from .table import escape_key_part

    return escape_key_part(text)
