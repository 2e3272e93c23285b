"""device_code accounts in Azure, with the Key Vault permissions main.bicep grants the app's identity.

Two Key Vault emulators enforce Azure RBAC: the secrets vault and the token-cache vault, each granting the app
exactly the actions and data actions of the roles main.bicep assigns on it (derived by tests/infra/roles.py from
main.bicep and the built-in role definitions). The account signs in once, then a later run refreshes its tokens
and saves the refreshed cache: that works with today's grants, and fails (as the account's error naming the role)
with the grants the deployment had before the token-cache vault.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ingest.config import GraphAccount
from ingest.errors import AccountError, SecretError
from ingest.graph.token_cache import SecretTokenCacheStore, default_token_cache
from ingest.secrets import EnvironmentSecrets, KeyVaultSecrets, token_cache_source
from ingest.service import token_cache_store
from ingest.settings import Settings
from tests.infra.roles import builtin_roles, granted_by_main_bicep
from tests.support.keyvault_server import KeyVaultEmulator
from tests.support.microsoft import MicrosoftCloud

SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"


@pytest.fixture
def token_vault(cloud: MicrosoftCloud) -> Iterator[KeyVaultEmulator]:
    vault = KeyVaultEmulator(cloud.ca.server_context(), cloud.entra, cloud.tenant)
    vault.start()
    yield vault
    vault.stop()


def _permissions(grants: list[tuple[str, str]], target: str) -> tuple[str, ...]:
    roles = builtin_roles()
    return tuple(p for t, role_id in grants if t == target for p in roles[role_id].permissions)


def _refresh_and_save(
    cloud: MicrosoftCloud, token_vault: KeyVaultEmulator, grants: list[tuple[str, str]]
) -> tuple[GraphAccount, KeyVaultSecrets]:
    """Sign-in by the administrator (Secrets Officer on both vaults), then the app's identity with `grants`."""
    account = cloud.device_code_account()
    officer = builtin_roles()["b86a8fe4-44ce-4948-aee5-eccb2c155cd7"].permissions
    cloud.keyvault.grants = {cloud.app.client_id: officer}
    token_vault.grants = {cloud.app.client_id: officer}
    cloud.sign_in(account, cloud.key_vault(), default_token_cache(account.name, cloud.key_vault(token_vault.vault_url)))
    cloud.keyvault.grants = {cloud.app.client_id: _permissions(grants, "keyVault")}
    token_vault.grants = {cloud.app.client_id: _permissions(grants, "tokenCacheVault")}
    cloud.entra.expire_access_tokens()
    return account, cloud.key_vault()


def test_the_roles_main_bicep_grants_let_a_device_code_account_refresh_and_save(
    cloud: MicrosoftCloud, token_vault: KeyVaultEmulator
) -> None:
    grants = granted_by_main_bicep()
    account, secrets = _refresh_and_save(cloud, token_vault, grants)
    store = default_token_cache(account.name, cloud.key_vault(token_vault.vault_url))
    with cloud.open(account, secrets=secrets, token_cache=store) as mailbox:
        assert mailbox.check()[0] == "signed in to Entra ID (device_code)"
    name = "ingest-token-cache-ap-invoices"
    assert len(token_vault.secrets[name]) == 2  # the sign-in's version and the refreshed one
    assert name not in cloud.keyvault.secrets, "token caches stay out of the secrets vault"
    # ... and the app still cannot write to the secrets vault.
    with pytest.raises(SecretError, match=r"denied writing secret 'doc2-api-key' \(403"):
        secrets.set("doc2-api-key", "replaced")
    assert ("PUT", 403) in [(m, s) for m, _p, s in cloud.keyvault.requests]


def test_the_grants_before_the_token_cache_vault_fail_at_the_first_refresh(
    cloud: MicrosoftCloud, token_vault: KeyVaultEmulator
) -> None:
    """Key Vault Secrets User only (the deployment before): the refreshed cache cannot be saved."""
    before = [(t, r) for t, r in granted_by_main_bicep() if t != "tokenCacheVault"] + [
        ("tokenCacheVault", SECRETS_USER)
    ]
    account, secrets = _refresh_and_save(cloud, token_vault, before)
    store = default_token_cache(account.name, cloud.key_vault(token_vault.vault_url))
    with pytest.raises(AccountError) as caught, cloud.open(account, secrets=secrets, token_cache=store) as mailbox:
        mailbox.check()
    assert "Key Vault Secrets Officer" in str(caught.value)
    assert len(token_vault.secrets["ingest-token-cache-ap-invoices"]) == 1


def test_the_token_cache_vault_setting_chooses_where_caches_live(cloud: MicrosoftCloud) -> None:
    environ = {"TOKEN_CACHE_VAULT_URL": "https://kv-tc-example.vault.azure.net/"}
    settings = Settings.from_environ(environ)
    assert settings.token_cache_vault_url == "https://kv-tc-example.vault.azure.net"
    secrets = EnvironmentSecrets({})
    source = token_cache_source(settings, secrets)
    assert isinstance(source, KeyVaultSecrets) and source._vault_url == "https://kv-tc-example.vault.azure.net"
    store = token_cache_store(cloud.account(auth="device_code", client_secret_secret=None), settings, secrets)
    assert isinstance(store, SecretTokenCacheStore) and store.name == "ingest-token-cache-ap-invoices"
    # Without it, the secrets' own source keeps them (Key Vault locally with KEY_VAULT_URL, or an encrypted file).
    assert token_cache_source(Settings.from_environ({}), secrets) is secrets
