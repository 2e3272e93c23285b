"""Reaching one Azure Storage account: by connection string (Azurite, local runs) or by service URLs with an
Entra ID credential (Azure: the app's managed identity; shared keys are off there, so no key exists at all).

The SDK clients get explicit connect/read time-outs and a short retry of their own; a failure is turned into
our error tree by the adapters that use them (state table, leases, job queue).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, IngestError, TransientError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient
    from azure.storage.blob import ContainerClient
    from azure.storage.queue import QueueClient

CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 30
SDK_RETRIES = 3

_CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": CONNECT_TIMEOUT_SECONDS,
    "read_timeout": READ_TIMEOUT_SECONDS,
    "retry_total": SDK_RETRIES,
}


class StorageAccount:
    """Where one storage account is and how to sign in to it; hands out SDK clients for its services."""

    def __init__(
        self,
        *,
        connection_string: str | None = None,
        table_url: str | None = None,
        blob_url: str | None = None,
        queue_url: str | None = None,
        client_id: str | None = None,
        credential: TokenCredential | None = None,
    ) -> None:
        self.connection_string = connection_string
        self.table_url = table_url
        self.blob_url = blob_url
        self.queue_url = queue_url
        self._client_id = client_id
        self._credential = credential
        self._own_credential = False

    def describe(self) -> str:
        """For messages: the endpoints, or the account name of a connection string, never a key."""
        if self.connection_string is None:
            return ", ".join(url for url in (self.table_url, self.blob_url, self.queue_url) if url)
        if re.search(r"(?i)UseDevelopmentStorage=true", self.connection_string):
            return "Azurite (UseDevelopmentStorage=true)"
        match = re.search(r"(?i)AccountName=([^;]+)", self.connection_string)
        return f"storage account {match.group(1) if match else '?'} (connection string)"

    def credential(self) -> TokenCredential:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential  # lazy: slow to import

            # In Azure, AZURE_CLIENT_ID (or the connection's __clientId) picks the user-assigned identity.
            self._credential = DefaultAzureCredential(managed_identity_client_id=self._client_id)
            self._own_credential = True
        return self._credential

    def table_client(self, table: str) -> TableClient:
        from azure.data.tables import TableClient

        if self.connection_string is not None:
            return TableClient.from_connection_string(self.connection_string, table, **_CLIENT_OPTIONS)
        return TableClient(_required(self.table_url, "table"), table, credential=self.credential(), **_CLIENT_OPTIONS)

    def container_client(self, container: str) -> ContainerClient:
        from azure.storage.blob import ContainerClient

        if self.connection_string is not None:
            return ContainerClient.from_connection_string(self.connection_string, container, **_CLIENT_OPTIONS)
        return ContainerClient(
            _required(self.blob_url, "blob"), container, credential=self.credential(), **_CLIENT_OPTIONS
        )

    def queue_client(self, queue: str) -> QueueClient:
        """A queue client whose messages are base64 text, as the Functions queue trigger reads them by default."""
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

        encode, decode = TextBase64EncodePolicy(), TextBase64DecodePolicy()
        if self.connection_string is not None:
            return QueueClient.from_connection_string(
                self.connection_string,
                queue,
                message_encode_policy=encode,
                message_decode_policy=decode,
                **_CLIENT_OPTIONS,
            )
        return QueueClient(
            _required(self.queue_url, "queue"),
            queue,
            credential=self.credential(),
            message_encode_policy=encode,
            message_decode_policy=decode,
            **_CLIENT_OPTIONS,
        )

    def close(self) -> None:
        if self._own_credential and self._credential is not None:
            close = getattr(self._credential, "close", None)
            if close is not None:
                close()
            self._credential = None
            self._own_credential = False


def _required(url: str | None, service: str) -> str:
    if not url:
        raise ConfigError(f"no Azure Storage {service} endpoint configured")
    return url


def storage_error(err: Exception, what: str, role: str) -> IngestError:
    """Our error for an Azure Storage SDK failure: ``what`` names the thing (table, lease, queue) and ``role``
    the RBAC role the app's identity needs for it."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, ClientAuthenticationError):
        return ConfigError(f"{what}: cannot sign in to Azure Storage: {first_line}")
    if isinstance(err, HttpResponseError) and err.status_code == 403:
        return ConfigError(
            f"{what}: access denied ({getattr(err, 'error_code', None) or 403}): give the app's identity the "
            f"'{role}' role on the storage account"
        )
    if isinstance(err, HttpResponseError) and err.status_code is not None:
        return TransientError(f"{what}: Azure Storage answered {err.status_code}: {first_line}")
    return TransientError(f"{what}: Azure Storage not reachable: {first_line}")
