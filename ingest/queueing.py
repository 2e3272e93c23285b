"""The fan-out job queue: a timer puts one job per account on an Azure Storage queue; the queue-triggered function
runs that one account. Many accounts are then imported in parallel across the Function App's instances.

The queue is the one the Functions host watches for the trigger (app setting ``INGEST_QUEUE_NAME``, default
``ingest-jobs``) in the host's storage, found the way the host finds it:

- ``AzureWebJobsStorage`` holding a connection string (locally: ``UseDevelopmentStorage=true`` for Azurite), or
- the identity-based settings ``AzureWebJobsStorage__queueServiceUri`` (or ``__accountName``) with
  ``AzureWebJobsStorage__clientId`` (else ``AZURE_CLIENT_ID``) naming the managed identity.

Messages are JSON, base64-encoded as the queue trigger expects (host.json ``messageEncoding: base64``), and expire
after ``JOB_TIME_TO_LIVE_SECONDS``: a job nobody got to before then is superseded by the next timer's job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .azure_storage import StorageAccount, storage_error
from .errors import ConfigError
from .settings import STORAGE_SETTING, Settings

log = logging.getLogger(__name__)

DEFAULT_QUEUE_NAME = "ingest-jobs"
POISON_SUFFIX = "-poison"  # where the Functions host moves a job after host.json maxDequeueCount failures
JOB_TIME_TO_LIVE_SECONDS = 3600
_ROLE = "Storage Queue Data Contributor"


@dataclass(frozen=True)
class Job:
    """Import one account. ``trigger`` says who asked (``mail_timer``, ``graph_timer``)."""

    account: str
    type: str
    trigger: str
    enqueued_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        """The job in a queue message; ValueError when it is not one of ours."""
        try:
            data: Any = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"not a JSON job: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("account"), str) or not data["account"]:
            raise ValueError("not an import job: no account name")
        return cls(
            account=data["account"],
            type=str(data.get("type", "")),
            trigger=str(data.get("trigger", "")),
            enqueued_at=str(data.get("enqueued_at", "")),
        )


def queue_name(settings: Settings) -> str:
    return settings.queue_name or DEFAULT_QUEUE_NAME


def host_storage(settings: Settings) -> StorageAccount:
    """The Functions host's storage account, from the AzureWebJobsStorage settings."""
    found = settings.host_storage
    if found.connection_string:
        return StorageAccount(connection_string=found.connection_string)
    queue_url = found.queue_service_uri
    if not queue_url and found.account_name:
        queue_url = f"https://{found.account_name}.queue.core.windows.net"
    if not queue_url:
        raise ConfigError(
            f"no job queue storage: set {STORAGE_SETTING} (a connection string, UseDevelopmentStorage=true for "
            f"Azurite) or {STORAGE_SETTING}__queueServiceUri with {STORAGE_SETTING}__clientId"
        )
    return StorageAccount(queue_url=queue_url.rstrip("/"), client_id=found.client_id)


class JobQueue:
    def __init__(self, storage: StorageAccount, name: str) -> None:
        self.name = name
        self._storage = storage
        self._where = f"job queue {name!r} ({storage.describe()})"
        self._client = storage.queue_client(name)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobQueue:
        return cls(host_storage(settings), queue_name(settings))

    def send_all(self, jobs: Iterable[Job], *, delay_seconds: int = 0) -> int:
        """Queue ``jobs``; with ``delay_seconds`` they become visible to the trigger only after that long."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        sent = 0
        for job in jobs:
            options = {"time_to_live": JOB_TIME_TO_LIVE_SECONDS, "visibility_timeout": delay_seconds or None}
            try:
                try:
                    self._client.send_message(job.to_json(), **options)
                except ResourceNotFoundError:
                    self._create()
                    self._client.send_message(job.to_json(), **options)
            except AzureError as err:
                raise storage_error(err, f"{self._where}: job for account {job.account}", _ROLE) from err
            sent += 1
            log.info("account %s: import job queued on %s (%s)", job.account, self.name, job.trigger)
        return sent

    def _create(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with suppress(ResourceExistsError):
            self._client.create_queue()

    def close(self) -> None:
        self._client.close()
        self._storage.close()
