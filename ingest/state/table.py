"""Azure Table Storage state store, for the Function App: the same behaviour as the SQLite store, shared by
every instance, with an account lock that is a blob lease (``ingest.leases``) in the same storage account.

``INGEST_STATE_URL`` forms:

- ``azuretable://ACCOUNT.table.core.windows.net/TABLE`` — Azure, signed in with DefaultAzureCredential (the app's
  managed identity, picked by ``AZURE_CLIENT_ID``). The leases live in the container ``ingest-leases`` of the
  same account (``https://ACCOUNT.blob.core.windows.net``); ``?lease_container=NAME`` chooses another container.
- ``azuretable+connstr:TABLE;CONNECTION_STRING`` — a storage connection string, e.g. Azurite:
  ``azuretable+connstr:ingeststate;UseDevelopmentStorage=true``. Everything after the first ``;`` is the
  connection string; it is never printed back.

Layout: one partition per account (PartitionKey = the account name). RowKeys are ``u|IDENTITY|CUSTOM_DOC_ID`` for
a document in DOC², ``m|MESSAGE_KEY`` for a message's attempts and status and ``c|NAME`` for a cursor (the Graph
delta link of a folder). Key parts are escaped (Table keys
forbid ``/ \\ # ?`` and control characters; ``%``, ``|`` and ``~`` are escaped too so the layout stays
unambiguous) and parts longer than ``MAX_KEY_PART`` are replaced by ``~h`` + their SHA-256; the original values
are kept as properties, bounded too: Table Storage refuses a string property over 32K characters, and a sender
controls the Message-ID an identity is made of (a 40,000-character one stopped its account for good). An identity
or message key longer than ``MAX_PROPERTY_CHARS`` is kept as ``~h`` + its SHA-256 (compared the same way), a file
name or DOC² id cut at ``MAX_NAME_CHARS``, an error at ``MAX_ERROR_CHARS``. ``record_failure`` counts with optimistic
concurrency (ETag), so two instances counting the same message never lose an attempt. ``record_uploads`` and
``record_settlements`` send their rows as entity group transactions (all rows of an account share its
partition): one request per ``TRANSACTION_ROWS`` rows; ``record_uploads`` carries cursors (the next message's
"attempt started" mark) in the same transaction, a forgotten one as a row without a value.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from ..azure_storage import StorageAccount, storage_error
from ..errors import ConfigError, TransientError
from ..leases import DEFAULT_LEASE_CONTAINER, BlobLeaseLocks
from .base import (
    MAX_CURSOR_CHARS,
    AccountLock,
    ContentRecord,
    DuplicateRecord,
    MessageState,
    Settlement,
    Status,
    UploadRecord,
)
from .table_records import OperatorRecords

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger(__name__)

URL_SCHEME = "azuretable://"
CONNECTION_STRING_SCHEME = "azuretable+connstr:"
MAX_KEY_PART = 255
MAX_PROPERTY_CHARS = 16_000  # identities and message keys: half Table Storage's 32K characters a string may have
MAX_NAME_CHARS = 1024  # file names (sanitised to 200 bytes anyway) and DOC²'s document ids
MAX_ERROR_CHARS = 8000
_ROLE = "Storage Table Data Contributor"
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_ESCAPED = frozenset("/\\#?%|~")
_SETTLED: tuple[Status, ...] = ("processed", "failed", "skipped")
_CONCURRENCY_ATTEMPTS = 50
TRANSACTION_ROWS = 100  # the most operations Table Storage takes in one entity group transaction...
TRANSACTION_CHARS = 1_000_000  # ...and a bound well below its 4 MiB per transaction (property values, counted)

T = TypeVar("T")


def escape_key_part(text: str) -> str:
    """A Table key part for ``text``: forbidden and separator characters as ``%XX``; long parts hashed."""
    escaped = "".join(f"%{ord(c):02X}" if c in _ESCAPED or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c for c in text)
    if len(escaped) > MAX_KEY_PART:
        return "~h" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return escaped


def bounded(text: str) -> str:
    """``text`` as a property value: itself, or ``~h`` + its SHA-256 when longer than ``MAX_PROPERTY_CHARS``."""
    if len(text) > MAX_PROPERTY_CHARS:
        return "~h" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


def _upload_prefix(identity: str) -> str:
    return f"u|{escape_key_part(identity)}|"


def _message_row(message_key: str) -> str:
    return f"m|{escape_key_part(message_key)}"


def _cursor_row(name: str) -> str:
    return f"c|{escape_key_part(name)}"


def _document_entity(account: str, prefix: str, document: UploadRecord | DuplicateRecord, stamp: str) -> dict[str, Any]:
    """The properties an upload's row and a duplicate's row share; ``stamp`` names the property of the time."""
    return {
        "PartitionKey": escape_key_part(account),
        "RowKey": prefix + escape_key_part(document.custom_doc_id),
        "account": account,
        "identity": bounded(document.identity),
        "custom_doc_id": document.custom_doc_id,
        "filename": document.filename[:MAX_NAME_CHARS],
        stamp: _now(),
    }


def _duplicate_prefix(identity: str) -> str:
    return f"d|{escape_key_part(identity)}|"


# The content index (dedupe: content) is shared by every account: one partition of its own. Account names cannot
# start with '~' (config), so it never meets an account's partition.
CONTENT_PARTITION = "~content"


def _now() -> datetime:
    return datetime.now(UTC)


def parse_state_url(url: str) -> tuple[StorageAccount, str, str]:
    """(storage account, table name, lease container) of an ``azuretable`` INGEST_STATE_URL."""
    forms = f"use {URL_SCHEME}ACCOUNT.table.core.windows.net/TABLE or {CONNECTION_STRING_SCHEME}TABLE;CONNECTION_STRING"
    if url.startswith(CONNECTION_STRING_SCHEME):
        table, _, connection_string = url.removeprefix(CONNECTION_STRING_SCHEME).partition(";")
        if not connection_string.strip():
            raise ConfigError(f"INGEST_STATE_URL: no connection string after the table name: {forms}")
        account = StorageAccount(connection_string=connection_string)
        lease_container = DEFAULT_LEASE_CONTAINER
    elif url.startswith(URL_SCHEME):
        parts = urlsplit(url)
        host, table = parts.netloc, parts.path.strip("/")
        # The URL itself is never repeated: a user name, key or signature in it would end up in logs.
        if not host or "@" in host:
            raise ConfigError(f"INGEST_STATE_URL: no storage host (or a user name or key in it, not shown): {forms}")
        if ".table." not in host:
            raise ConfigError(
                f"INGEST_STATE_URL: {host!r} is not a Table service host (ACCOUNT.table.core.windows.net): "
                f"the blob service for the account leases is found by its name"
            )
        query = parse_qs(parts.query)
        lease_container = query.get("lease_container", [DEFAULT_LEASE_CONTAINER])[0]
        account = StorageAccount(
            table_url=f"https://{host}", blob_url=f"https://{host.replace('.table.', '.blob.', 1)}"
        )
    else:
        raise ConfigError(f"INGEST_STATE_URL: not an Azure Table Storage URL: {forms}")
    if not _TABLE_NAME.match(table):
        raise ConfigError(
            f"INGEST_STATE_URL: table name {table!r} is not valid (3-63 letters and digits, starting with a letter)"
        )
    return account, table, lease_container


class TableStateStore(OperatorRecords):
    def __init__(self, account: StorageAccount, table: str, locks: BlobLeaseLocks, *, create: bool = True) -> None:
        self._account = account
        self._name = table
        self._where = f"state table {table!r} ({account.describe()})"
        self._table: TableClient = account.table_client(table)
        self._locks = locks
        if create:
            self._create_table()

    @classmethod
    def from_url(cls, url: str) -> TableStateStore:
        account, table, lease_container = parse_state_url(url)
        return cls(account, table, BlobLeaseLocks(account.container_client(lease_container)))

    def _create_table(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with suppress(ResourceExistsError):
            self._call(self._table.create_table)

    def _call(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs one SDK call; the exceptions callers handle (not found, exists, modified) pass through."""
        from azure.core.exceptions import (
            AzureError,
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        try:
            return operation(*args, **kwargs)
        except (ResourceExistsError, ResourceNotFoundError, ResourceModifiedError):
            raise
        except AzureError as err:
            raise storage_error(err, self._where, _ROLE) from err

    # -- uploads ---------------------------------------------------------------------------------------------

    def uploaded(self, account: str, identity: str) -> set[str]:
        prefix = _upload_prefix(identity)
        rows = self._query(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            # '}' follows '|' in code point order: the range is exactly the keys starting with the prefix.
            {"pk": escape_key_part(account), "low": prefix, "high": prefix[:-1] + "}"},
            ["custom_doc_id", "identity"],
        )
        stored = bounded(identity)
        return {row["custom_doc_id"] for row in rows if row.get("identity") == stored}

    def record_upload(
        self, account: str, identity: str, custom_doc_id: str, filename: str, doc2_id: str | None
    ) -> None:
        from azure.data.tables import UpdateMode

        entity = self._upload_entity(account, UploadRecord(identity, custom_doc_id, filename, doc2_id))
        self._call(self._table.upsert_entity, entity, mode=UpdateMode.REPLACE)

    def record_uploads(
        self, account: str, uploads: Sequence[UploadRecord], cursors: Mapping[str, str | None] | None = None
    ) -> None:
        from azure.data.tables import UpdateMode

        marks = [self._cursor_entity(account, name, value) for name, value in (cursors or {}).items()]
        self._upsert_together(
            [*marks, *(self._upload_entity(account, upload) for upload in uploads)], UpdateMode.REPLACE
        )
        contents = [
            {
                "PartitionKey": CONTENT_PARTITION,
                "RowKey": escape_key_part(upload.digest),
                **_content_properties(
                    ContentRecord(
                        upload.digest, account, upload.identity, upload.custom_doc_id, upload.filename,
                        upload.doc2_id, _now(),
                    )
                ),
            }
            for upload in uploads
            if upload.digest
        ]  # fmt: skip
        self._upsert_together(contents, UpdateMode.REPLACE)

    # -- the content index and duplicates (dedupe: content) ----------------------------------------------------

    def find_content(self, digest: str, since: datetime) -> ContentRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._call(self._table.get_entity, CONTENT_PARTITION, escape_key_part(digest))
        except ResourceNotFoundError:
            return None
        found = _content_record(entity)
        return found if found.uploaded_at >= since else None

    def record_duplicate(self, account: str, duplicate: DuplicateRecord) -> None:
        from azure.data.tables import UpdateMode

        entity = _document_entity(account, _duplicate_prefix(duplicate.identity), duplicate, "recorded_at")
        entity.update({f"original_{key}": value for key, value in _content_properties(duplicate.original).items()})
        self._call(self._table.upsert_entity, entity, mode=UpdateMode.REPLACE)

    def duplicates(self, account: str, identity: str) -> list[DuplicateRecord]:
        prefix = _duplicate_prefix(identity)
        rows = self._query(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": escape_key_part(account), "low": prefix, "high": prefix[:-1] + "}"},
            ["identity", "custom_doc_id", "filename", *(f"original_{name}" for name in _CONTENT_PROPERTIES)],
        )
        found = [
            DuplicateRecord(
                row["identity"],
                row["custom_doc_id"],
                row["filename"],
                _content_record({key.removeprefix("original_"): value for key, value in row.items()}),
            )
            for row in rows
            if row.get("identity") == bounded(identity)
        ]
        return sorted(found, key=lambda duplicate: duplicate.custom_doc_id)

    def _upload_entity(self, account: str, upload: UploadRecord) -> dict[str, Any]:
        entity = _document_entity(account, _upload_prefix(upload.identity), upload, "uploaded_at")
        if upload.doc2_id is not None:
            entity["doc2_id"] = upload.doc2_id[:MAX_NAME_CHARS]
        return entity

    def _upsert_together(self, entities: list[dict[str, Any]], mode: Any) -> None:
        """Upsert entities of one partition in as few entity group transactions as the limits allow. A row given
        twice is written once, as last given (a transaction may not touch a row twice)."""
        unique = list({entity["RowKey"]: entity for entity in entities}.values())
        batch: list[dict[str, Any]] = []
        chars = 0
        for entity in unique:
            size = sum(len(str(value)) for value in entity.values()) + 200  # + the request's own text per row
            if batch and (len(batch) >= TRANSACTION_ROWS or chars + size > TRANSACTION_CHARS):
                self._submit(batch, mode)
                batch, chars = [], 0
            batch.append(entity)
            chars += size
        if batch:
            self._submit(batch, mode)

    def _submit(self, batch: list[dict[str, Any]], mode: Any) -> None:
        if len(batch) == 1:  # a plain request: smaller, and the same effect
            self._call(self._table.upsert_entity, batch[0], mode=mode)
            return
        self._call(self._table.submit_transaction, [("upsert", entity, {"mode": mode}) for entity in batch])

    # -- messages --------------------------------------------------------------------------------------------

    def message(self, account: str, message_key: str) -> MessageState | None:
        entity = self._get(account, message_key)
        if entity is None:
            return None
        return MessageState(entity["status"], int(entity.get("attempts", 0)), entity.get("last_error"))

    def record_failure(self, account: str, message_key: str, identity: str | None, error: str) -> int:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        error = error[:MAX_ERROR_CHARS]
        for attempt in range(_CONCURRENCY_ATTEMPTS):
            entity = self._get(account, message_key)
            try:
                if entity is None:
                    new = self._message_entity(account, message_key, identity, "pending")
                    new.update(attempts=1, last_error=error)
                    self._call(self._table.create_entity, new)
                    return 1
                attempts = int(entity.get("attempts", 0)) + 1
                entity.update(status="pending", attempts=attempts, last_error=error, updated_at=_now())
                if identity is not None:
                    entity["identity"] = bounded(identity)
                self._replace_unchanged(entity, entity.metadata["etag"])
                return attempts
            except (ResourceExistsError, ResourceModifiedError):
                # Another instance counted at the same moment: read again and count on top of it.
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))  # noqa: S311 - jitter, not cryptography
        raise TransientError(f"{self._where}: could not count a failed attempt of message {message_key!r} ({account})")

    def record_settled(
        self, account: str, message_key: str, identity: str | None, status: Status, note: str | None
    ) -> None:
        from azure.data.tables import UpdateMode

        # MERGE keeps the attempts so far, and the identity and last error when none is given now.
        self._call(
            self._table.upsert_entity,
            self._settled_entity(account, Settlement(message_key, identity, status, note)),
            mode=UpdateMode.MERGE,
        )

    def record_settlements(self, account: str, settled: Sequence[Settlement]) -> None:
        from azure.data.tables import UpdateMode

        self._upsert_together([self._settled_entity(account, one) for one in settled], UpdateMode.MERGE)

    def _settled_entity(self, account: str, settled: Settlement) -> dict[str, Any]:
        entity = self._message_entity(account, settled.message_key, settled.identity, settled.status)
        if settled.note is not None:
            entity["last_error"] = settled.note[:MAX_ERROR_CHARS]
        return entity

    def settled_keys(self, account: str) -> set[str]:
        rows = self._query(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": escape_key_part(account), "low": "m|", "high": "m}"},
            ["message_key", "status"],
        )
        return {row["message_key"] for row in rows if row.get("status") in _SETTLED}

    def _message_entity(self, account: str, message_key: str, identity: str | None, status: Status) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "PartitionKey": escape_key_part(account),
            "RowKey": _message_row(message_key),
            "account": account,
            "message_key": bounded(message_key),  # settled_keys gives a key longer than that back as its hash
            "status": status,
            "updated_at": _now(),
        }
        if identity is not None:
            entity["identity"] = bounded(identity)
        return entity

    def _get(self, account: str, message_key: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._call(self._table.get_entity, escape_key_part(account), _message_row(message_key))
        except ResourceNotFoundError:
            return None

    def _query(self, query: str, parameters: dict[str, str], select: list[str]) -> list[Any]:
        def run() -> list[Any]:
            return list(self._table.query_entities(query, parameters=parameters, select=select))

        return self._call(run)

    # -- cursors ---------------------------------------------------------------------------------------------

    def cursor(self, account: str, name: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._call(self._table.get_entity, escape_key_part(account), _cursor_row(name))
        except ResourceNotFoundError:
            return None
        value = entity.get("value")
        return str(value) if value is not None else None

    def record_cursor(self, account: str, name: str, value: str | None) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import UpdateMode

        if value is None:
            with suppress(ResourceNotFoundError):
                self._call(self._table.delete_entity, escape_key_part(account), _cursor_row(name))
            return
        self._call(self._table.upsert_entity, self._cursor_entity(account, name, value), mode=UpdateMode.REPLACE)

    def add_cursor(self, account: str, name: str, value: str) -> bool:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        entity = self._cursor_entity(account, name, value)
        try:
            self._call(self._table.create_entity, entity)
        except ResourceExistsError:
            # A row without a value is a cursor forgotten inside a transaction (record_uploads): there is none.
            try:
                existing: Any = self._call(self._table.get_entity, entity["PartitionKey"], entity["RowKey"])
            except ResourceNotFoundError:  # deleted meanwhile: try again
                return self.add_cursor(account, name, value)
            if existing.get("value") is not None:
                return False
            try:
                self._replace_unchanged(entity, existing.metadata["etag"])
            except ResourceModifiedError:
                return False
        return True

    def _cursor_entity(self, account: str, name: str, value: str | None) -> dict[str, Any]:
        """The cursor's row; for None one without a value (a transaction cannot delete a row that may be missing)."""
        if value is not None and len(value) > MAX_CURSOR_CHARS:
            raise ValueError(
                f"cursor {name!r} of account {account!r}: {len(value)} characters, more than the store keeps"
            )
        entity: dict[str, Any] = {
            "PartitionKey": escape_key_part(account),
            "RowKey": _cursor_row(name),
            "account": account,
            "name": name,
            "updated_at": _now(),
            **({} if value is None else {"value": value}),
        }
        return entity

    # -- lock and life cycle ---------------------------------------------------------------------------------

    @contextmanager
    def account_lock(self, account: str) -> Iterator[AccountLock]:
        with self._locks.hold(account) as lease:
            yield lease

    def close(self) -> None:
        self._table.close()
        self._locks.close()
        self._account.close()


_CONTENT_PROPERTIES = ("digest", "account", "identity", "custom_doc_id", "filename", "doc2_id", "uploaded_at")


def _content_properties(record: ContentRecord) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "digest": record.digest,
        "account": record.account,
        "identity": bounded(record.identity),
        "custom_doc_id": record.custom_doc_id,
        "filename": record.filename[:MAX_NAME_CHARS],
        "uploaded_at": record.uploaded_at,
    }
    if record.doc2_id is not None:
        properties["doc2_id"] = record.doc2_id[:MAX_NAME_CHARS]
    return properties


def _content_record(entity: Any) -> ContentRecord:
    return ContentRecord(
        entity["digest"],
        entity["account"],
        entity["identity"],
        entity["custom_doc_id"],
        entity["filename"],
        entity.get("doc2_id"),
        entity["uploaded_at"],
    )
