"""``python -m ingest signin NAME``: the one-time device-code sign-in of a Graph account with ``auth: device_code``.

The user opens https://microsoft.com/devicelogin (or the national cloud's page) on any device, enters the code
shown, and signs in with MFA as the policy demands. The token cache (refresh token included) is then kept in
Key Vault (the token-cache vault of TOKEN_CACHE_VAULT_URL when set, else KEY_VAULT_URL's), or in an encrypted
local file without Key Vault (see :func:`ingest.graph.auth.default_token_cache`);
every run refreshes it silently. When the refresh token is revoked or expires, runs fail with a message that
says to sign in again.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import GraphAccount
from ..secrets import SecretSource, secret_source, token_cache_source
from ..settings import Settings
from .auth import TokenCacheStore, default_token_cache, sign_in_with_device_code


def device_code_signin(
    account: GraphAccount,
    settings: Settings,
    *,
    prompt: Callable[[str], None],
    secrets: SecretSource | None = None,
    token_cache: TokenCacheStore | None = None,
) -> str:
    """Signs in interactively and stores the token cache; returns the signed-in user name."""
    secrets = secrets or secret_source(settings.key_vault_url, settings.environ, authority_host=settings.authority_host)
    return sign_in_with_device_code(
        account,
        secrets,
        authority_host=settings.authority_host,
        graph_endpoint=settings.graph_endpoint,
        ca_file=str(account.ca_file) if account.ca_file else None,
        token_cache=token_cache or token_cache_store(account, settings, secrets),
        prompt=prompt,
    )


def token_cache_store(account: GraphAccount, settings: Settings, secrets: SecretSource) -> TokenCacheStore:
    """The store of a device_code account's token cache, for the runs and for the sign-in alike."""
    source = token_cache_source(settings.token_cache_vault_url, secrets, authority_host=settings.authority_host)
    return default_token_cache(account.name, source)
