"""Key Vault through the real azure-keyvault-secrets SecretClient and azure-identity ClientSecretCredential against
the local Key Vault and Entra ID emulators: the challenge flow, reading and writing secrets, and a device-code
account whose token cache lives in Key Vault."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from ingest.errors import AccountError, SecretError
from ingest.graph.token_cache import SecretTokenCacheStore, default_token_cache
from tests.support.microsoft import MicrosoftCloud


def test_secret_client_reads_through_the_challenge(cloud: MicrosoftCloud) -> None:
    cloud.keyvault.set_secret("doc2-api-key", "key-123")
    client = SecretClient(cloud.keyvault.vault_url, cloud.app_credential(), **cloud.vault_options())

    assert client.get_secret("doc2-api-key").value == "key-123"
    assert client.get_secret("doc2-api-key").value == "key-123"

    statuses = [status for _method, _path, status in cloud.keyvault.requests]
    assert statuses == [401, 200, 200]  # one challenge, then the token is reused
    (token_request,) = cloud.entra.token_requests("client_credentials")
    assert token_request.scope == "https://vault.azure.net/.default"


def test_missing_secret_is_secret_not_found(cloud: MicrosoftCloud) -> None:
    client = SecretClient(cloud.keyvault.vault_url, cloud.app_credential(), **cloud.vault_options())
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_secret("nope")
    assert "SecretNotFound" in str(caught.value)


def test_set_secret_makes_a_new_version(cloud: MicrosoftCloud) -> None:
    client = SecretClient(cloud.keyvault.vault_url, cloud.app_credential(), **cloud.vault_options())
    first = client.set_secret("token-cache", "one")
    second = client.set_secret("token-cache", "two")
    assert client.get_secret("token-cache").value == "two"
    assert client.get_secret("token-cache", first.properties.version).value == "one"
    assert first.properties.version != second.properties.version


def test_key_vault_secrets_of_the_product(cloud: MicrosoftCloud) -> None:
    cloud.keyvault.set_secret("graph-client-secret", "s3cr3t")
    secrets = cloud.key_vault()
    assert secrets("graph-client-secret") == "s3cr3t"
    with pytest.raises(SecretError) as caught:
        secrets("graph-client-id")
    assert "does not exist in Key Vault" in str(caught.value)

    cloud.keyvault.denied_clients.add(cloud.app.client_id)
    with pytest.raises(SecretError) as caught:
        cloud.key_vault()("x")
    assert "Key Vault Secrets User" in str(caught.value)


def test_device_code_token_cache_kept_in_key_vault(cloud: MicrosoftCloud) -> None:
    secrets = cloud.key_vault()
    account = cloud.device_code_account()
    store = default_token_cache(account.name, secrets)
    assert isinstance(store, SecretTokenCacheStore)

    cloud.sign_in(account, secrets, store)
    saved = cloud.keyvault.get_secret("ingest-token-cache-ap-invoices")
    assert saved and "RefreshToken" in saved

    # the timer run, in another process: reads the cache from Key Vault, refreshes, writes it back
    cloud.entra.expire_access_tokens()
    fresh = cloud.key_vault()
    with cloud.open(account, secrets=fresh) as mailbox:
        assert mailbox.check()[0] == "signed in to Entra ID (device_code)"
    assert len(cloud.keyvault.secrets["ingest-token-cache-ap-invoices"]) == 2


def test_a_refreshed_token_cache_key_vault_will_not_store_is_an_account_error_naming_the_role(
    cloud: MicrosoftCloud,
) -> None:
    """In Azure the app identity may only read Key Vault: the first refresh of a device_code account must fail as
    that account's error saying which role is missing, not as an obscure failure."""
    secrets = cloud.key_vault()
    account = cloud.device_code_account()

    cloud.sign_in(account, secrets, default_token_cache(account.name, secrets))
    cloud.keyvault.read_only_clients.add(cloud.app.client_id)  # "Key Vault Secrets User" only
    cloud.entra.expire_access_tokens()

    reader = cloud.key_vault()
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
    vault = cloud.key_vault()
    account = cloud.device_code_account()
    cloud.sign_in(account, vault, default_token_cache(account.name, vault))
    cloud.keyvault.denied_clients.add(cloud.app.client_id)  # the role on the token-cache vault was taken away

    denied = cloud.key_vault()
    store = default_token_cache(account.name, denied)
    with pytest.raises(AccountError) as caught, cloud.open(account, token_cache=store) as mailbox:
        mailbox.check()

    message = str(caught.value)
    assert "account 'ap-invoices'" in message and "cannot be read" in message
    assert "Key Vault Secrets User" in message
    assert "not signed in" not in message and "signin" not in message
