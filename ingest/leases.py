"""One run per account at a time across every instance of the Function App: a blob lease per account.

The lease is taken for ``DEFAULT_LEASE_SECONDS`` (60 s, the longest finite lease Azure Storage grants) and renewed
by a background thread every ``DEFAULT_RENEW_SECONDS`` while the run goes on, then released. A run that dies
(instance lost, process killed, time-out) stops renewing, so its lease expires within a minute and the next run
of that account goes ahead. The blobs are empty; their names are the account names, in one container.

A run can lose its lease without dying: a renewal answered 409 (the lease expired, e.g. the storage account could
not be reached for a minute, and another run took it), or no renewal succeeded for a whole lease period. ``hold``
yields a ``Lease`` whose ``check()`` then raises AccountError: the pipeline calls it before every move, so such a
run stops before it settles more mail (what reached DOC² is still recorded: that is idempotent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING
from urllib.parse import quote

from .azure_storage import storage_error
from .errors import AccountBusy, AccountError

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobLeaseClient, ContainerClient

log = logging.getLogger(__name__)

DEFAULT_LEASE_CONTAINER = "ingest-leases"
DEFAULT_LEASE_SECONDS = 60
DEFAULT_RENEW_SECONDS = 20
_EXPIRY_MARGIN_SECONDS = 5  # a lease not renewed for its period less this is taken for expired
_ROLE = "Storage Blob Data Contributor"


class Lease:
    """The account's lease as its run sees it: ``check()`` raises once it is lost or may have expired."""

    def __init__(self, client: BlobLeaseClient, where: str, lease_seconds: int) -> None:
        self.client = client
        self._where = where
        self._lease_seconds = lease_seconds
        self._renewed_at = time.monotonic()
        self._lost: str | None = None
        self._lock = threading.Lock()

    def renewed(self) -> None:
        with self._lock:
            self._renewed_at = time.monotonic()

    def lose(self, reason: str) -> None:
        with self._lock:
            self._lost = reason

    def check(self) -> None:
        with self._lock:
            lost, since = self._lost, time.monotonic() - self._renewed_at
        if lost is None and since >= self._lease_seconds - _EXPIRY_MARGIN_SECONDS:
            lost = f"not renewed for {since:.0f} s, it may have expired"
        if lost is not None:
            raise AccountError(
                f"{self._where}: lost ({lost}); this run stops before moving more mail, as another run may now work "
                f"on the account (what reached DOC² is recorded; the next run goes on)"
            )


class BlobLeaseLocks:
    """``hold(account)``: the account's lease for the duration of a ``with`` block, or AccountBusy."""

    def __init__(
        self,
        container: ContainerClient,
        *,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
        renew_seconds: float = DEFAULT_RENEW_SECONDS,
    ) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("a blob lease lasts 15 to 60 seconds")
        if not 0 < renew_seconds < lease_seconds:
            raise ValueError("the lease must be renewed before it expires")
        self._container = container
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds

    @contextmanager
    def hold(self, account: str) -> Iterator[Lease]:
        blob = self._container.get_blob_client(f"accounts/{quote(account, safe='')}")
        where = f"account {account}: lease {self._container.container_name}/{blob.blob_name}"
        lease = Lease(self._acquire(blob, account, where), where, self._lease_seconds)
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._keep_renewing, args=(lease, stop, where), name=f"lease-{account}", daemon=True
        )
        renewer.start()
        log.debug("%s: acquired for %d s, renewed every %g s", where, self._lease_seconds, self._renew_seconds)
        try:
            yield lease
        finally:
            stop.set()
            renewer.join()
            self._release(lease.client, where)

    def _acquire(self, blob: BlobClient, account: str, where: str) -> BlobLeaseClient:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

        for _ in range(3):
            try:
                return blob.acquire_lease(lease_duration=self._lease_seconds)
            except ResourceExistsError as err:
                if getattr(err, "error_code", None) in ("LeaseAlreadyPresent", "LeaseIdMismatchWithLeaseOperation"):
                    raise AccountBusy(
                        f"account {account!r}: another run is working on it (it holds the lease "
                        f"{self._container.container_name}/{blob.blob_name}, which expires within "
                        f"{self._lease_seconds} s if that run died); skipped"
                    ) from None
                raise storage_error(err, where, _ROLE) from err
            except ResourceNotFoundError:
                self._create_blob(blob, where)  # first run of this account (or of this storage account)
            except AzureError as err:
                raise storage_error(err, where, _ROLE) from err
        raise storage_error(RuntimeError("the lease blob keeps disappearing"), where, _ROLE)

    def _create_blob(self, blob: BlobClient, where: str) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

        try:
            try:
                blob.upload_blob(b"", overwrite=False)
            except ResourceNotFoundError:
                with suppress(ResourceExistsError):
                    self._container.create_container()
                blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass  # another run created it meanwhile
        except AzureError as err:
            raise storage_error(err, where, _ROLE) from err

    def _keep_renewing(self, lease: Lease, stop: threading.Event, where: str) -> None:
        from azure.core.exceptions import AzureError, HttpResponseError

        while not stop.wait(self._renew_seconds):
            try:
                lease.client.renew()
                lease.renewed()
            except HttpResponseError as err:
                if err.status_code == 409:  # expired and taken by another run: nothing left to renew
                    code = getattr(err, "error_code", None) or "HTTP 409"
                    lease.lose(str(code))
                    log.error("%s: lost (%s); another run may now work on this account", where, code)
                    return
                log.warning("%s: renewal failed, trying again in %g s: %s", where, self._renew_seconds, err.reason)
            except AzureError as err:
                log.warning("%s: renewal failed, trying again in %g s: %s", where, self._renew_seconds, err)

    def close(self) -> None:
        self._container.close()

    def _release(self, lease: BlobLeaseClient, where: str) -> None:
        from azure.core.exceptions import AzureError

        try:
            lease.release()
        except AzureError as err:
            log.warning("%s: release failed (it expires within %d s): %s", where, self._lease_seconds, err)
