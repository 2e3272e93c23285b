"""Key Vault through the real azure-keyvault-secrets SecretClient and azure-identity ClientSecretCredential against
the local Key Vault and Entra ID emulators: the challenge flow, reading and writing secrets, and a device-code
account whose token cache lives in Key Vault."""

from __future__ import annotations

import re

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from ingest.config import GraphAccount
from ingest.errors import AccountError, SecretError
from ingest.graph.auth import sign_in_with_device_code
from ingest.graph.token_cache import SecretTokenCacheStore, TokenCacheStore, default_token_cache
from ingest.secrets import KeyVaultSecrets
from tests.support.microsoft import MAILBOX, MicrosoftCloud


def _credential(cloud: MicrosoftCloud) -> ClientSecretCredential:
    return ClientSecretCredential(
        cloud.tenant,
        cloud.app.client_id,
        cloud.client_secret,
        authority=cloud.entra.base_url,
        connection_verify=str(cloud.ca.ca_cert),
        disable_instance_discovery=True,
    )


def _client_options(cloud: MicrosoftCloud) -> dict[str, object]:
    # A local vault is not under vault.azure.net: the SDK would refuse its challenge without this.
    return {"connection_verify": str(cloud.ca.ca_cert), "verify_challenge_resource": False}


def test_secret_client_reads_through_the_challenge(cloud: MicrosoftCloud) -> None:
    cloud.keyvault.set_secret("doc2-api-key", "key-123")
    client = SecretClient(cloud.keyvault.vault_url, _credential(cloud), **_client_options(cloud))  # type: ignore[arg-type]

    assert client.get_secret("doc2-api-key").value == "key-123"
    assert client.get_secret("doc2-api-key").value == "key-123"

    statuses = [status for _method, _path, status in cloud.keyvault.requests]
    assert statuses == [401, 200, 200]  # one challenge, then the token is reused
    (token_request,) = cloud.entra.token_requests("client_credentials")
    assert token_request.scope == "https://vault.azure.net/.default"


def test_missing_secret_is_secret_not_found(cloud: MicrosoftCloud) -> None:
    client = SecretClient(cloud.keyvault.vault_url, _credential(cloud), **_client_options(cloud))  # type: ignore[arg-type]
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_secret("nope")
    assert "SecretNotFound" in str(caught.value)


def test_set_secret_makes_a_new_version(cloud: MicrosoftCloud) -> None:
    client = SecretClient(cloud.keyvault.vault_url, _credential(cloud), **_client_options(cloud))  # type: ignore[arg-type]
    first = client.set_secret("token-cache", "one")
    second = client.set_secret("token-cache", "two")
    assert client.get_secret("token-cache").value == "two"
    assert client.get_secret("token-cache", first.properties.version).value == "one"
    assert first.properties.version != second.properties.version


def test_key_vault_secrets_of_the_product(cloud: MicrosoftCloud) -> None:
    cloud.keyvault.set_secret("graph-client-secret", "s3cr3t")
    secrets = KeyVaultSecrets(cloud.keyvault.vault_url, credential=_credential(cloud), **_client_options(cloud))
    assert secrets("graph-client-secret") == "s3cr3t"
    with pytest.raises(SecretError) as caught:
        secrets("graph-client-id")
    assert "does not exist in Key Vault" in str(caught.value)

    cloud.keyvault.denied_clients.add(cloud.app.client_id)
    with pytest.raises(SecretError) as caught:
        KeyVaultSecrets(cloud.keyvault.vault_url, credential=_credential(cloud), **_client_options(cloud))("x")
    assert "Key Vault Secrets User" in str(caught.value)


def _sign_in(cloud: MicrosoftCloud, account: GraphAccount, secrets: KeyVaultSecrets, store: TokenCacheStore) -> None:
    """The one-time device-code sign-in, the user approving the code at once."""

    def prompt(text: str) -> None:
        match = re.search(r"enter the code (\w+)", text)
        assert match
        cloud.entra.approve_device_code(match.group(1), MAILBOX)

    sign_in_with_device_code(
        account,
        secrets,
        authority_host=cloud.entra.base_url,
        graph_endpoint=cloud.graph.endpoint,
        ca_file=str(cloud.ca.ca_cert),
        token_cache=store,
        prompt=prompt,
    )


def test_device_code_token_cache_kept_in_key_vault(cloud: MicrosoftCloud) -> None:
    cloud.app.public_client = True
    for name, value in cloud.secrets.items():
        cloud.keyvault.set_secret(name, value)
    secrets = KeyVaultSecrets(cloud.keyvault.vault_url, credential=_credential(cloud), **_client_options(cloud))
    account = cloud.account(auth="device_code", client_secret_secret=None)
    store = default_token_cache(account.name, secrets)
    assert isinstance(store, SecretTokenCacheStore)

    _sign_in(cloud, account, secrets, store)
    saved = cloud.keyvault.get_secret("ingest-token-cache-ap-invoices")
    assert saved and "RefreshToken" in saved

    # the timer run, in another process: reads the cache from Key Vault, refreshes, writes it back
    cloud.entra.expire_access_tokens()
    fresh = KeyVaultSecrets(cloud.keyvault.vault_url, credential=_credential(cloud), **_client_options(cloud))
    with cloud.open(account, secrets=fresh) as mailbox:
        assert mailbox.check()[0] == "signed in to Entra ID (device_code)"
    assert len(cloud.keyvault.secrets["ingest-token-cache-ap-invoices"]) == 2


def test_a_refreshed_token_cache_key_vault_will_not_store_is_an_account_error_naming_the_role(
    cloud: MicrosoftCloud,
) -> None:
    """In Azure the app identity may only read Key Vault: the first refresh of a device_code account must fail as
    that account's error saying which role is missing, not as an obscure failure."""
    cloud.app.public_client = True
    for name, value in cloud.secrets.items():
        cloud.keyvault.set_secret(name, value)
    secrets = KeyVaultSecrets(cloud.keyvault.vault_url, credential=_credential(cloud), **_client_options(cloud))
    account = cloud.account(auth="device_code", client_secret_secret=None)

    _sign_in(cloud, account, secrets, default_token_cache(account.name, secrets))
    cloud.keyvault.read_only_clients.add(cloud.app.client_id)  # "Key Vault Secrets User" only
    cloud.entra.expire_access_tokens()

    reader = KeyVaultSecrets(cloud.keyvault.vault_url, credential=_credential(cloud), **_client_options(cloud))
    with pytest.raises(AccountError) as caught, cloud.open(account, secrets=reader) as mailbox:
        mailbox.check()

    message = str(caught.value)
    assert "account 'ap-invoices'" in message
    assert "secret 'ingest-token-cache-ap-invoices'" in message
    assert "403" in message and "Key Vault Secrets Officer" in message
    assert ("PUT", "/secrets/ingest-token-cache-ap-invoices", 403) in [
        (method, path.rstrip("/"), status) for method, path, status in cloud.keyvault.requests
    ]
    assert len(cloud.keyvault.secrets["ingest-token-cache-ap-invoices"]) == 1  # the sign-in's version only


def test_a_token_cache_key_vault_refuses_to_read_is_not_reported_as_not_signed_in(cloud: MicrosoftCloud) -> None:
    """Signing in again cannot fix a 403 on the token-cache secret: the error must say what it is."""
    cloud.app.public_client = True
    for name, value in cloud.secrets.items():
        cloud.keyvault.set_secret(name, value)
    vault = KeyVaultSecrets(cloud.keyvault.vault_url, credential=_credential(cloud), **_client_options(cloud))
    account = cloud.account(auth="device_code", client_secret_secret=None)
    _sign_in(cloud, account, vault, default_token_cache(account.name, vault))
    cloud.keyvault.denied_clients.add(cloud.app.client_id)  # the role on the token-cache vault was taken away

    denied = KeyVaultSecrets(cloud.keyvault.vault_url, credential=_credential(cloud), **_client_options(cloud))
    store = default_token_cache(account.name, denied)
    with pytest.raises(AccountError) as caught, cloud.open(account, token_cache=store) as mailbox:
        mailbox.check()

    message = str(caught.value)
    assert "account 'ap-invoices'" in message and "cannot be read" in message
    assert "Key Vault Secrets User" in message
    assert "not signed in" not in message and "signin" not in message
